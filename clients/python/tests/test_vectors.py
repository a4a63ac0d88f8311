"""tests/vectors.json against the Python client's encoder and decoder.

For a request vector, the client's request builder (the same function its
method uses) given the vector's arguments must produce exactly the vector's
bytes; for a reply vector, the client's decoder must read the bytes to the
vector's value and to a typed result. Pending (ROUND4) vectors are checked
too: the client speaks those shapes already.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest

import courier
from courier import protocol as p

ROOT = Path(__file__).resolve().parents[3]
FILE = json.loads((ROOT / "tests" / "vectors.json").read_text())
VECTORS = FILE["vectors"]


def value(j: Any) -> Any:
    """The file's JSON encoding (its "schema") to the Python value msgpack
    reads: bin is bytes, str is str, maps are dicts in wire order."""
    if isinstance(j, list):
        return [value(x) for x in j]
    if isinstance(j, dict):
        ((tag, inner),) = j.items()
        if tag == "int":
            return int(inner)
        if tag == "bin":
            return bytes.fromhex(inner)
        if tag == "map":
            return {value(k): value(v) for k, v in inner}
        raise ValueError(tag)
    return j


def frame(v) -> bytes:
    return bytes.fromhex(v["hex"].replace(" ", ""))


def body(v) -> bytes:
    data = frame(v)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    return data[4:]


# The requests whose builder takes the vector's arguments as they are.
BUILDERS = {
    p.REGISTER_PUBLISHER: p.register_publisher_args,
    p.DELETE_TOPIC: p.topic_args,
    p.UNSUBSCRIBE: p.topic_args,
    p.TOPIC_INFO: p.topic_args,
    p.PUBLISH: p.publish_args,
    p.PUBLISH_BATCH: p.publish_batch_args,
    p.REGISTER_SUBSCRIBER: p.register_subscriber_args,
    p.SUBSCRIBE: p.subscribe_args,
    p.SEEK: p.seek_args,
    p.PULL: p.pull_args,
    p.ACK: p.ack_args,
    p.LIST_TOPICS: p.list_topics_args,
    p.FETCH: p.fetch_args,
}


def build(op: int, rid: int, args: List[Any]) -> bytes:
    """The request as the client builds it, from the vector's arguments."""
    if op == p.HELLO:
        version, name, *rest = args
        creds = rest[0] if rest else None
        return p.request(op, rid, p.hello_args(name, creds, version))
    if op == p.CREATE_TOPIC:
        options = args[1] if len(args) > 1 else {}
        return p.request(op, rid, p.create_topic_args(args[0], **options))
    if op in (p.STATS, p.END_SESSION):
        assert args == []
        return p.request(op, rid, [])
    if op in BUILDERS:
        return p.request(op, rid, BUILDERS[op](*args))
    raise AssertionError(f"no builder for op {op}")


REQUESTS = [v for v in VECTORS if v["kind"] == "request"]
REPLIES = [v for v in VECTORS if v["kind"] == "reply"]


def test_the_file_documents_its_schema():
    schema = FILE["schema"]
    assert {"bin", "map", "int"} <= {k.split('"')[1] for k in schema["value_encoding"] if '"' in k}
    assert len(VECTORS) >= 100


@pytest.mark.parametrize("v", REQUESTS, ids=[v["name"] for v in REQUESTS])
def test_request_vector(v):
    val = value(v["value"])
    if v.get("canonical", True):
        # The packer alone, and the client's builder from the arguments.
        assert p.encode_frame(val) == frame(v)
        assert build(val[0], val[1], val[2:]) == frame(v)
    else:
        # A form the client never writes, but which must mean the same.
        assert p.unpack(body(v)) == val


@pytest.mark.parametrize("v", REPLIES, ids=[v["name"] for v in REPLIES])
def test_reply_vector(v):
    val = value(v["value"])
    raw = p.unpack(body(v))
    assert raw == val
    assert type(raw[2]) is type(val[2])
    rid, result = p.decode_reply(v["op"], body(v))
    assert rid == val[0]
    if val[1] != 0:
        assert isinstance(result, courier.CourierError)
        assert result.code == val[1] and result.message == val[2]
        assert type(result) is courier.errors.BY_CODE[val[1]]
    else:
        assert not isinstance(result, courier.CourierError)
    if v["op"] == p.PULL and val[1] == 0:
        for group, expected in zip(result, val[2]):
            assert group.topic == expected[0] and group.first_offset == expected[1]
            assert group.payloads == expected[2]
            assert group.lost == (expected[3] if len(expected) == 4 else 0)
    if v["op"] == p.FETCH and val[1] == 0:
        assert [m.time_ms for m in result.messages] == [m[1] for m in val[2]["messages"]]


def test_credentials_come_from_the_environment(monkeypatch):
    """HELLO with COURIER_USER / COURIER_TOKEN set gives the vector's bytes
    (a socket that records what the client sends; no broker needed)."""
    import socket
    import threading

    (vector,) = [v for v in VECTORS if v["name"] == "HELLO request with credentials"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    got = []

    def serve():
        conn, _ = server.accept()
        data = b""
        while len(data) < len(frame(vector)):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        got.append(data)
        conn.sendall(p.encode_frame([1, 30, "authentication failed"]))
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    monkeypatch.setenv("COURIER_USER", "alice")
    monkeypatch.setenv("COURIER_TOKEN", "s3cret")
    with pytest.raises(courier.AuthFailed) as e:
        courier.Client("127.0.0.1:%d" % server.getsockname()[1], client_name="demo", timeout=5)
    t.join(10)
    server.close()
    assert got == [frame(vector)]
    assert e.value.closes and not e.value.retryable
