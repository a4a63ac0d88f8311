"""Protocol version 2's ROUND4 additions, live: retention, positions, SEEK,
FETCH, a pull's `lost`, producer ids with sequence numbers (issue 12);
credentials, FORBIDDEN, AUTH_FAILED and TLS (issue 13).

The broker speaks all of it, so nothing here is skipped for a missing
feature: a broker without it fails these tests. Only the TLS test needs the
``openssl`` command (to make a certificate) and says so where it is absent.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

import courier


def test_retention_positions_seek_and_fetch(broker, topic):
    pub = courier.Publisher(broker.addr)
    pub.create_topic(topic, retain_ms=86_400_000)
    for word in ("A", "B", "C"):
        pub.publish(topic, word)
    info = pub.topic_info(topic)
    assert info["next_offset"] == 3 and info.get("retain_ms") == 86_400_000
    with courier.Subscriber(broker.addr) as sub:
        assert sub.subscribe(topic, "earliest") == 0
        assert [m.payload for m in sub.pull(topic, wait=0, ack=False)] == [b"A", b"B", b"C"]
        assert sub.seek(topic, 1) == 1
        assert [m.offset for m in sub.pull(topic, wait=0, ack=False)] == [1, 2]
        assert sub.seek(topic, {"time_ms": 0}) == 0
        assert sub.seek(topic, "new") == 3
        assert sub.seek(topic, 1_000_000) == 3  # clamped
    with courier.Subscriber(broker.addr) as late:
        assert late.subscribe(topic, 2) == 2
    fetched = pub.fetch(topic, 0, max_messages=2)
    assert [(m.topic, m.offset, m.payload) for m in fetched.messages] == [(topic, 0, b"A"), (topic, 1, b"B")]
    assert all(m.time_ms and m.time_ms > 1_600_000_000_000 for m in fetched.messages)
    assert (fetched.next_offset, fetched.earliest_offset, fetched.end_offset) == (2, 0, 3)
    with pytest.raises(ValueError):
        pub.subscribe(topic, "oldest")  # checked before sending


def test_a_pull_reports_what_retention_dropped(broker, topic):
    pub = courier.Publisher(broker.addr)
    pub.create_topic(topic, retain_bytes=10)
    with courier.Subscriber(broker.addr) as sub:
        sub.subscribe(topic, 0)
        for _ in range(5):
            pub.publish(topic, b"0123456789")
        got = sub.pull(topic, wait=0)
        assert got.lost == {topic: 4} and [m.offset for m in got] == [4]


def test_producer_sequence_numbers(broker, topic):
    with courier.Publisher(broker.addr, producer_id=f"producer-{topic}") as pub:
        pub.create_topic(topic)
        first = pub.publish(topic, "A", seq=1)
        assert pub.publish(topic, "A", seq=1) == first  # the original reply
        with pytest.raises(courier.SequenceGap) as e:
            pub.publish(topic, "C", seq=3)
        assert e.value.code == 28 and not e.value.retryable
        assert pub.publish_batch(topic, ["B", "C"], first_seq=2).count == 2
        assert pub.topic_info(topic)["next_offset"] == 3


# ---------------------------------------------------------------- issue 13


def test_credentials_forbidden_and_auth_failed(start_broker, tmp_path, monkeypatch, topic):
    token = "s3cret-token"
    users = tmp_path / "users.txt"
    digest = hashlib.sha256(token.encode()).hexdigest()
    users.write_text(f"alice {digest} publish:{topic} admin:{topic} subscribe:{topic}\n")
    b = start_broker("--users", str(users))
    with courier.Publisher(b.addr, user="alice", token=token) as pub:
        pub.create_topic(topic)
        pub.send(topic, "Hi")
        with pytest.raises(courier.Forbidden) as e:
            pub.create_topic(topic + "-other")
        assert e.value.code == 31 and not pub.closed
    monkeypatch.setenv("COURIER_USER", "alice")
    monkeypatch.setenv("COURIER_TOKEN", token)
    with courier.Subscriber(b.addr) as sub:  # credentials from the environment
        sub.subscribe(topic)
    monkeypatch.setenv("COURIER_TOKEN", "wrong")
    with pytest.raises(courier.AuthFailed) as e:
        courier.Client(b.addr)
    assert e.value.code == 30 and e.value.closes
    monkeypatch.delenv("COURIER_USER")
    monkeypatch.delenv("COURIER_TOKEN")
    with pytest.raises(courier.AuthFailed):
        courier.Client(b.addr)  # no credentials at all


def test_tls(start_broker, tmp_path, topic):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    b = start_broker("--tls-cert", str(cert), "--tls-key", str(key))
    with courier.Publisher(b.addr, tls=True, ca=str(cert)) as pub, \
            courier.Subscriber(b.addr, tls=True, ca=str(cert)) as sub:
        pub.create_topic(topic)
        sub.subscribe(topic)
        payload = bytes(range(256)) * 1000
        pub.publish(topic, payload)
        assert sub.pull(topic)[0].payload == payload
    with pytest.raises(courier.CourierError):
        courier.Client(b.addr, timeout=5)  # plaintext to a TLS port
    with pytest.raises(courier.ConnectionFailed):
        courier.Client(b.addr, tls=True, timeout=5)  # not a CA it trusts
