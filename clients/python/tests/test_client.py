"""The client against the real broker: every operation, every error code a
client can provoke, pipelining, fan-out, resume with redelivery, held and
refused publishes, deletion during a waiting pull, binary payloads."""

from __future__ import annotations

import socket
import struct
import time

import pytest

import courier
from courier import protocol as p

from conftest import wait_until


def pub_sub(addr: str, topic: str):
    pub = courier.Publisher(addr)
    pub.create_topic(topic)
    sub = courier.Subscriber(addr)
    sub.subscribe(topic)
    return pub, sub


def parked_pull(pub, sub, topic: str):
    """A PULL of ``topic`` from ``sub``, sent and parked at the broker
    (it may wait 30 s); returns its completion."""
    waiting = sub.pull_nowait(topic, wait=30)
    sub.flush()
    wait_until(lambda: pub.stats()["waiting_pulls"] >= 1, what="the pull to park")
    return waiting


def held_publish(start_broker, topic: str):
    """A broker that keeps one message per topic and holds publishes 30 s;
    ``topic`` holds "Hello", and "World" is held. Returns the broker, the
    publisher, the subscriber and the held publish's completion."""
    b = start_broker("--max-backlog-messages", "1", "--publish-hold", "30")
    pub, sub = pub_sub(b.addr, topic)
    assert pub.publish(topic, "Hello") == (0, 1)
    held = pub.publish_nowait(topic, "World")
    pub.flush()
    wait_until(lambda: pub.stats()["held_now"] == 1, what="the publish to be held")
    return b, pub, sub, held


class Raw:
    """A socket that speaks frames and nothing else, for the handshake errors."""

    def __init__(self, addr: str) -> None:
        host, port = courier.client.parse_addr(addr)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def send(self, value) -> None:
        self.sock.sendall(p.encode_frame(value))

    def reply(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    return p.unpack(body)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def closed(self) -> bool:
        return self.reply() is None


# ---------------------------------------------------------------- operations


def test_handshake_announces_version_and_limits(broker):
    with courier.Client(broker.addr, client_name="pytest") as c:
        assert c.server_info["version"] == courier.PROTOCOL_VERSION
        assert c.max_payload_bytes == c.server_info["max_frame_bytes"] - 512
        with pytest.raises(courier.HandshakeRepeated) as e:
            c.hello()
        assert e.value.code == 6 and not e.value.retryable
        assert c.stats()["connections"] >= 1  # still open


def test_every_operation(broker, topic):
    with courier.Client(broker.addr) as pub, courier.Client(broker.addr) as sub:
        assert isinstance(pub.register_publisher(), int)
        assert pub.register_publisher() == pub.register_publisher()
        pub.create_topic(topic)
        reg = sub.register_subscriber()
        assert reg.topics == [] and reg.more is False and int(reg) == reg.subscriber_id
        assert sub.subscribe(topic) == 0
        assert pub.publish(topic, "one") == (0, 1)
        assert pub.publish_batch(topic, [b"two", "three"]) == (1, 2, 1)
        assert pub.publish_batch(topic, []) == (3, 0, 1)
        got = sub.pull(topic, ack=False)
        assert [(m.topic, m.offset, m.payload) for m in got] == [
            (topic, 0, b"one"),
            (topic, 1, b"two"),
            (topic, 2, b"three"),
        ]
        assert got.lost == {}
        sub.ack(topic, 3)
        info = pub.topic_info(topic)
        assert info["name"] == topic and info["next_offset"] == 3
        assert info["backlog_messages"] == 0 and info["subscribers"] == 1
        names = [t["name"] for t in pub.iter_topics()]
        assert topic in names
        page = pub.list_topics(limit=1)
        assert len(page.topics) == 1
        stats = pub.stats()
        assert stats["topics"] >= 1 and isinstance(stats["errors"], dict)
        assert sub.pull(None, wait=0) == []  # all topics, nothing ready
        sub.unsubscribe(topic)
        with pytest.raises(courier.NotSubscribed):
            sub.pull(topic, wait=0)
        sub.end_session()
        with pytest.raises(courier.NotRegistered):
            sub.end_session()
        pub.delete_topic(topic)
        with pytest.raises(courier.UnknownTopic):
            pub.topic_info(topic)


def test_original_tool_names(broker, topic):
    pub = courier.Publisher(broker.addr)
    pub.registerPublisher()
    pub.createTopic(topic)
    sub = courier.Subscriber(broker.addr)
    sid = sub.registerSubscriber()
    assert int(sid) == sub.session_id
    sub.subscribe(topic)
    pub.send(topic, "Hello")
    pub.send(topic, b"World")
    assert [m.payload for m in sub.pull(topic)] == [b"Hello", b"World"]
    assert sub.pull(topic, wait=0.05) == []  # waits briefly, then nothing
    pub.deleteTopic(topic)
    pub.close()
    sub.close()


def test_role_classes_register_themselves(broker, topic):
    with courier.Publisher(broker.addr) as pub, courier.Subscriber(broker.addr) as sub:
        pub.create_topic(topic)
        assert sub.session_id is None
        sub.subscribe(topic)  # makes the session first
        assert sub.session_id is not None
        pub.send(topic, "x")
        assert sub.pull(topic)[0].text == "x"
    assert pub.closed and sub.closed


def test_waiting_pull_is_answered_when_a_message_arrives(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    waiting = parked_pull(pub, sub, topic)
    pub.publish(topic, "late")
    groups = waiting.result()
    assert [g.payloads for g in groups] == [[b"late"]]


def test_two_pulls_in_flight_take_messages_in_order(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    first = sub.pull_nowait(topic, wait=30)
    second = sub.pull_nowait(topic, wait=30)
    sub.flush()
    wait_until(lambda: pub.stats()["waiting_pulls"] >= 2, what="two parked pulls")
    pub.publish(topic, "A")
    assert first.result()[0].payloads == [b"A"]
    assert not second.done()
    sub.ack(topic, 1)
    pub.publish(topic, "B")
    assert second.result()[0].first_offset == 1


def test_messages_iterator_acknowledges_what_it_yielded(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    with pub.pipeline() as pipe:
        for i in range(10):
            pipe.publish(topic, f"m{i}")
    taken = []
    for m in sub.messages(topic, idle_timeout=0.2):
        taken.append(m.offset)
        if len(taken) == 5:
            break
    assert taken == [0, 1, 2, 3, 4]
    sid = sub.session_id
    sub.close()
    with courier.Subscriber(broker.addr, subscriber_id=sid) as again:
        rest = [m.offset for m in again.messages(topic, idle_timeout=0.2, wait=0.05)]
    assert rest == [5, 6, 7, 8, 9]


# ---------------------------------------------------------------- pipelining, fan-out, resume


def test_pipelined_publishes_all_complete_in_order(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    pipe = pub.pipeline(max_in_flight=256)
    for i in range(5000):
        pipe.publish(topic, i.to_bytes(4, "big"))
    pipe.publish_batch(topic, [b"a", b"b"])
    outcomes = pipe.wait()
    assert [o.offset for o in outcomes[:-1]] == list(range(5000))
    assert outcomes[-1] == (5000, 2, 1)
    seen = []
    while len(seen) < 5002:
        seen.extend(sub.pull(topic, wait=1))
    assert [m.offset for m in seen] == list(range(5002))
    assert all(m.payload == m.offset.to_bytes(4, "big") for m in seen[:5000])


def test_pipeline_collects_errors_without_raising(broker, topic):
    with courier.Publisher(broker.addr) as pub:
        pub.create_topic(topic)
        pipe = pub.pipeline()
        pipe.publish(topic, "ok")
        pipe.publish(topic + "-missing", "no")
        pipe.publish(topic, "ok again")
        ok, missing, again = pipe.wait()
        assert ok.offset == 0 and again.offset == 1
        assert isinstance(missing, courier.UnknownTopic)
        with pytest.raises(courier.UnknownTopic):
            with pub.pipeline() as p2:
                p2.publish(topic + "-missing", "no")


def test_fan_out_every_subscriber_gets_everything(broker, topic):
    with courier.Publisher(broker.addr) as pub:
        pub.create_topic(topic)
        subs = [courier.Subscriber(broker.addr) for _ in range(3)]
        for s in subs:
            s.subscribe(topic)
        with pub.pipeline() as pipe:
            for i in range(100):
                pipe.publish(topic, f"{i}")
        for s in subs:
            got = []
            while len(got) < 100:
                got.extend(m.text for m in s.pull(topic, wait=1))
            assert got == [str(i) for i in range(100)]
            s.close()


def test_resume_redelivers_what_was_not_acknowledged(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    for word in ("a", "b", "c"):
        pub.publish(topic, word)
    assert len(sub.pull(topic, ack=False)) == 3
    sub.ack(topic, 1)  # "a" only
    sid = sub.session_id
    sub.close()
    with courier.Subscriber(broker.addr, subscriber_id=sid) as again:
        assert again.registration.topics == [topic]
        redelivered = again.pull(topic, ack=False)
        assert [(m.offset, m.payload) for m in redelivered] == [(1, b"b"), (2, b"c")]
        again.ack(topic, 3)
    with courier.Client(broker.addr) as third:
        third.resume(sid)
        assert third.pull(topic, wait=0) == []


def test_resume_takes_over_a_live_session(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    parked = parked_pull(pub, sub, topic)
    with courier.Client(broker.addr) as other:
        other.resume(sub.session_id)
        with pytest.raises(courier.SessionTakenOver):
            parked.result()
        with pytest.raises(courier.NotRegistered):
            sub.pull(topic, wait=0)


# ---------------------------------------------------------------- flow control


def test_held_publish_is_stored_once_room_is_made(start_broker, topic):
    _, pub, sub, held = held_publish(start_broker, topic)
    assert not held.done()
    msgs = sub.pull(topic, ack=False)
    assert [m.payload for m in msgs] == [b"Hello"]
    sub.ack(topic, 1)
    assert held.result() == (1, 1)


def test_refused_publish_after_the_hold(start_broker, topic):
    b = start_broker("--max-backlog-messages", "1", "--publish-hold", "0.2")
    pub, sub = pub_sub(b.addr, topic)
    pub.publish(topic, "Hello")
    with pytest.raises(courier.TopicFull) as e:
        pub.publish(topic, "World")
    assert e.value.code == 11 and e.value.retryable
    assert pub.topic_info(topic)["backlog_messages"] == 1
    with pytest.raises(courier.BatchTooLarge) as e:
        pub.publish_batch(topic, ["a", "b"])
    assert not e.value.retryable


def test_deleting_a_topic_ends_a_waiting_pull(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    waiting = parked_pull(pub, sub, topic)
    pub.delete_topic(topic)
    with pytest.raises(courier.TopicDeleted):
        waiting.result()
    with pytest.raises(courier.UnknownTopic):
        sub.pull(topic, wait=0)


def test_held_publish_on_a_deleted_topic(start_broker, topic):
    b, pub, sub, held = held_publish(start_broker, topic)
    with courier.Publisher(b.addr) as other:
        other.delete_topic(topic)
    with pytest.raises(courier.TopicDeleted):
        held.result()


# ---------------------------------------------------------------- payloads


def test_binary_payloads_round_trip(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    every_byte = bytes(range(256))
    largest = bytes(i % 256 for i in range(pub.max_payload_bytes))
    for payload in (every_byte, b"", largest, b"\x00", "ünïcödé"):
        pub.publish(topic, payload)
    got = []
    while len(got) < 5:
        got.extend(m.payload for m in sub.pull(topic, wait=1, max_messages=1))
    assert got == [every_byte, b"", largest, b"\x00", "ünïcödé".encode()]
    with pytest.raises(courier.PayloadTooLarge):
        pub.publish(topic, largest + b"!")
    assert pub.publish(topic, b"still open").offset == 5


# ---------------------------------------------------------------- errors


def test_request_errors(broker, topic):
    with courier.Client(broker.addr) as c:
        with pytest.raises(courier.NotRegistered):
            c.create_topic(topic)
        c.register_publisher()
        with pytest.raises(courier.InvalidTopicName):
            c.create_topic("has space")
        c.create_topic(topic)
        with pytest.raises(courier.TopicExists):
            c.create_topic(topic)
        with pytest.raises(courier.UnknownTopic):
            c.publish(topic + "x", "m")
        with pytest.raises(courier.MalformedRequest):
            c.call(p.PUBLISH, [topic])  # one element short
        with pytest.raises(courier.UnknownOperation):
            c.call(99, [])
        with pytest.raises(courier.UnknownSubscriber):
            c.register_subscriber(12345)
        c.register_subscriber()
        c.subscribe(topic)
        with pytest.raises(courier.InvalidAck) as e:
            c.ack(topic, 10)
        assert e.value.code == 16 and e.value.name == "INVALID_ACK"
        assert isinstance(e.value, courier.CourierError)
        assert c.stats()["errors"]["INVALID_ACK"] >= 1


def test_frame_too_large_closes_the_connection(broker, topic):
    c = courier.Publisher(broker.addr)
    c.create_topic(topic)
    with pytest.raises(courier.FrameTooLarge) as e:
        c.publish(topic, b"x" * c.server_info["max_frame_bytes"])
    assert e.value.closes and c.closed
    with pytest.raises(courier.CourierError):
        c.stats()


def test_handshake_errors(start_broker):
    b = start_broker("--handshake-timeout", "0.2")
    raw = Raw(b.addr)
    raw.send([1, 1, 1, "old"])
    assert raw.reply()[:2] == [1, 4]  # UNSUPPORTED_VERSION
    assert raw.closed()
    raw = Raw(b.addr)
    raw.send([12, 1])
    assert raw.reply()[:2] == [1, 5]  # HANDSHAKE_REQUIRED
    assert raw.closed()
    raw = Raw(b.addr)  # says nothing
    assert raw.reply()[:2] == [0, 20]  # TIMEOUT
    assert raw.closed()
    assert courier.errors.BY_CODE[20] is courier.Timeout


def test_limits(start_broker, topic):
    b = start_broker(
        "--max-topics", "1",
        "--max-sessions", "2",
        "--max-subscribers-per-topic", "1",
        "--max-subscriptions-per-session", "1",
        "--max-connections", "4",
    )
    pub = courier.Publisher(b.addr)
    pub.create_topic(topic)
    with pytest.raises(courier.TooManyTopics) as e:
        pub.create_topic(topic + "2")
    assert e.value.retryable
    s1 = courier.Subscriber(b.addr)
    s1.subscribe(topic)
    s2 = courier.Subscriber(b.addr)
    with pytest.raises(courier.TooManySubscribers):
        s2.subscribe(topic)  # makes the second session, then refused
    with pytest.raises(courier.TooManySessions):
        s2.register_subscriber()
    pub.delete_topic(topic)
    pub.create_topic(topic + "a")
    s1.subscribe(topic + "a")
    with courier.Client(b.addr) as fourth:
        with pytest.raises(courier.TooManyConnections) as e:
            courier.Client(b.addr)
        assert e.value.closes
    for c in (pub, s1, s2):
        c.close()


def test_too_many_subscriptions(start_broker, topic):
    b = start_broker("--max-subscriptions-per-session", "1")
    with courier.Publisher(b.addr) as pub, courier.Subscriber(b.addr) as sub:
        pub.create_topic(topic)
        pub.create_topic(topic + "2")
        sub.subscribe(topic)
        with pytest.raises(courier.TooManySubscriptions):
            sub.subscribe(topic + "2")


def test_broker_full(start_broker, topic):
    b = start_broker("--max-memory", "16M", "--max-backlog-bytes", "1G", "--publish-hold", "0")
    with courier.Publisher(b.addr) as pub, courier.Subscriber(b.addr) as sub:
        pub.create_topic(topic)
        sub.subscribe(topic)
        chunk = b"x" * 65536
        with pytest.raises(courier.BrokerFull) as e:
            for _ in range(1000):
                pub.publish(topic, chunk)
        assert e.value.retryable


def test_shutting_down_answers_a_waiting_pull(start_broker, topic):
    b = start_broker()
    pub, sub = pub_sub(b.addr, topic)
    waiting = parked_pull(pub, sub, topic)
    b.terminate()
    with pytest.raises(courier.ShuttingDown) as e:
        waiting.result()
    assert e.value.closes and e.value.retryable and sub.closed


def test_client_timeout_on_a_silent_peer():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    addr = "127.0.0.1:%d" % silent.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(courier.ClientTimeout) as e:
        courier.Client(addr, timeout=0.2)
    assert time.monotonic() - start < 5
    assert isinstance(e.value, courier.CourierError) and isinstance(e.value, TimeoutError)
    silent.close()


def test_connection_failed():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(courier.ConnectionFailed) as e:
        courier.Client(f"127.0.0.1:{port}")
    assert e.value.code is None and e.value.retryable


def test_every_code_has_its_class():
    for code, cls in courier.errors.BY_CODE.items():
        assert cls.code == code
        assert issubclass(cls, courier.CourierError)
        assert cls.__name__ == "".join(w.capitalize() for w in cls.name.split("_"))
    assert courier.UnknownTopic.code == 9 and courier.TopicFull.retryable
    unknown = courier.errors.from_reply(999, "from a newer broker")
    assert type(unknown) is courier.CourierError and unknown.code == 999


def test_a_held_publish_times_out_on_the_client(start_broker, topic):
    b = start_broker("--max-backlog-messages", "1", "--publish-hold", "30")
    pub, sub = pub_sub(b.addr, topic)
    pub.publish(topic, "fills the topic")
    start = time.monotonic()
    with pytest.raises(courier.ClientTimeout):
        pub.publish(topic, "held", timeout=0.3)  # this call only
    assert 0.25 < time.monotonic() - start < 5
    assert pub.closed  # a late reply could not be matched: the client closed


def test_a_waiting_pull_times_out_only_after_its_wait(broker, topic):
    pub, sub = pub_sub(broker.addr, topic)
    sub.timeout = 0.2
    start = time.monotonic()
    assert sub.pull(topic, wait=0.5) == []  # the broker answers at 0.5 s
    assert time.monotonic() - start >= 0.45
    parked = sub.pull_nowait(topic, wait=30)
    with pytest.raises(courier.ClientTimeout):
        parked.result(timeout=0.2)


def test_the_default_timeout_covers_the_publish_hold(start_broker, topic):
    b = start_broker("--max-backlog-messages", "1", "--publish-hold", "0.6")
    pub, sub = pub_sub(b.addr, topic)
    pub.publish(topic, "fills the topic")
    pub.timeout = 0.3  # shorter than the hold: the hold is added to it
    with pytest.raises(courier.TopicFull):
        pub.publish(topic, "refused after the hold")
    assert not pub.closed
