"""The client against a durable broker (``--data-dir``): the errors only a
log or a producer's window can give — DUPLICATE_SEQUENCE (29), DISK_FULL
(32), STORAGE_UNAVAILABLE (27) — SHUTTING_DOWN to a waiting pull, the
STATS keys of the disk backlog, and a subscriber so far behind the memory
cache that what it reads comes back from the log.

STORAGE_UNAVAILABLE needs a write to the log to fail. A full file system or
an I/O error needs root (a small tmpfs, a device mapper) and would not fail
as root anyway for permission tricks (root ignores a read-only directory).
A file-size limit does it unprivileged, for root too: the broker is started
with ``RLIMIT_FSIZE`` low and ``SIGXFSZ`` ignored (an ignored signal stays
ignored across exec), so the write that crosses the limit fails with EFBIG,
the publish is answered STORAGE_UNAVAILABLE, and the log is cut back to
before it, so the next, smaller publish fits and succeeds.
"""

from __future__ import annotations

import resource
import signal
from typing import List

import pytest

import courier

from conftest import wait_until

DISK_KEYS = ("messages_evicted", "disk_reads", "disk_messages_read", "disk_reads_outstanding", "disk_bytes")


def durable(start_broker, tmp_path, *flags: str, **kwargs):
    return start_broker("--data-dir", str(tmp_path / "data"), *flags, **kwargs)


def test_an_old_seq_beyond_the_remembered_window_is_a_duplicate_sequence(broker, topic):
    with courier.Publisher(broker.addr, producer_id=f"window-{topic}") as pub:
        pub.create_topic(topic)
        offsets = [pub.publish(topic, f"m{seq}", seq=seq).offset for seq in range(1, 101)]
        # The last 64 replies are remembered: a resend gets its original offset.
        assert pub.publish(topic, "m100", seq=100).offset == offsets[99]
        assert pub.publish(topic, "m37", seq=37).offset == offsets[36]
        with pytest.raises(courier.DuplicateSequence) as e:
            pub.publish(topic, "m1", seq=1)  # stored, but too long ago to say where
        assert e.value.code == 29 and not e.value.retryable and not pub.closed
        assert isinstance(e.value, courier.CourierError)
        assert pub.topic_info(topic)["next_offset"] == 100  # nothing stored twice


def test_past_max_disk_a_publish_is_held_then_refused_disk_full(start_broker, tmp_path, topic):
    b = durable(start_broker, tmp_path, "--max-disk", "1M", "--publish-hold", "0.1")
    with courier.Publisher(b.addr) as pub, courier.Subscriber(b.addr) as sub:
        pub.create_topic(topic)
        sub.subscribe(topic)  # keeps everything: nothing may be deleted
        chunk = bytes(range(256)) * 1024  # 256 KiB
        stored = 0
        with pytest.raises(courier.DiskFull) as e:
            while stored < 40:  # 10 MiB: far past 1 MiB
                pub.publish(topic, chunk)
                stored += 1
        assert e.value.code == 32 and e.value.retryable and not pub.closed
        assert 1 <= stored < 40
        stats = pub.stats()
        assert stats["errors"].get("DISK_FULL") == 1
        assert 0 < stats["disk_bytes"] <= (1 << 20) + len(chunk) + 4096
        assert pub.topic_info(topic)["next_offset"] == stored  # the refused one was not stored


def test_a_failed_log_write_is_storage_unavailable(start_broker, tmp_path, topic):
    limit = 256 << 10

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    b = durable(start_broker, tmp_path, preexec=small_files)
    with courier.Publisher(b.addr) as pub, courier.Subscriber(b.addr) as sub:
        pub.create_topic(topic)
        sub.subscribe(topic)
        stored = 0
        with pytest.raises(courier.StorageUnavailable) as e:
            while stored < 2 * limit // 10_000:
                pub.publish(topic, b"x" * 10_000)
                stored += 1
        assert e.value.code == 27 and e.value.retryable and not pub.closed
        assert 0 < stored < limit // 10_000 + 1
        # Nothing of the failed publish is kept; its offset stays a gap, and
        # publishing goes on once a write fits.
        after = pub.publish(topic, b"small")
        assert after.offset == stored + 1
        got: List[courier.Message] = []
        wait_until(lambda: got.extend(sub.pull(topic, wait=0.1)) or len(got) == stored + 1,
                   what="every stored message")
        assert [m.offset for m in got] == list(range(stored)) + [stored + 1]
        assert got[-1].payload == b"small"
        assert pub.stats()["errors"].get("STORAGE_UNAVAILABLE") == 1


def test_shutting_down_answers_a_waiting_pull_on_a_durable_broker(start_broker, tmp_path, topic):
    b = durable(start_broker, tmp_path)
    with courier.Publisher(b.addr) as pub, courier.Subscriber(b.addr) as sub:
        pub.create_topic(topic)
        sub.subscribe(topic)
        waiting = sub.pull_nowait(topic, wait=30)
        sub.flush()
        wait_until(lambda: pub.stats()["waiting_pulls"] == 1, what="the pull to park")
        b.terminate()
        with pytest.raises(courier.ShuttingDown) as e:
            waiting.result()
        assert e.value.code == 21 and e.value.closes and e.value.retryable and sub.closed
    assert b.process.wait(timeout=20) == 0


def test_stats_carry_the_disk_keys(broker, start_broker, tmp_path):
    with courier.Client(broker.addr) as c:  # memory-only: there, but 0
        stats = c.stats()
        assert {k: stats[k] for k in DISK_KEYS} == dict.fromkeys(DISK_KEYS, 0)
    with courier.Client(durable(start_broker, tmp_path).addr) as c:
        stats = c.stats()
        assert all(isinstance(stats[k], int) and stats[k] >= 0 for k in DISK_KEYS)


def test_a_subscriber_far_behind_the_cache_reads_everything_from_disk(start_broker, tmp_path, topic):
    b = durable(start_broker, tmp_path, "--cache-bytes", "1M", "--fsync", "never")
    count, size = 400, 10_000  # 4 MB: four times the cache
    expected = [(b"%06d" % i) * (size // 6) for i in range(count)]
    with courier.Publisher(b.addr) as pub, courier.Subscriber(b.addr) as sub:
        pub.create_topic(topic, retain_ms=86_400_000)  # FETCH reads it after the acks too
        sub.subscribe(topic)
        with pub.pipeline() as pipe:
            for i in range(0, count, 50):
                pipe.publish_batch(topic, expected[i : i + 50])
        assert pub.stats()["messages_evicted"] > 0

        fetched: List[courier.Message] = []
        offset = 0
        while offset < count:
            page = pub.fetch(topic, offset, max_messages=64)
            assert page.messages, f"FETCH at {offset} returned nothing"
            fetched.extend(page.messages)
            offset = page.next_offset
        assert [m.offset for m in fetched] == list(range(count))
        assert [m.payload for m in fetched] == expected
        read_before = pub.stats()["disk_messages_read"]  # FETCH's reads need not count

        got: List[bytes] = []
        for message in sub.messages(topic, max_messages=64, idle_timeout=10):
            assert message.offset == len(got)
            got.append(message.payload)
            if len(got) == count:
                break
        assert got == expected

        stats = pub.stats()
        assert stats["disk_reads"] > 0
        assert stats["disk_messages_read"] > read_before  # the pulls were served from disk
        assert stats["disk_bytes"] >= count * size
        wait_until(lambda: pub.stats()["disk_reads_outstanding"] == 0, what="reads to finish")
        session = sub.session_id
    # messages() acknowledged all it yielded: a resume redelivers nothing.
    with courier.Subscriber(b.addr, subscriber_id=session) as again:
        assert again.pull(topic, wait=0) == []
