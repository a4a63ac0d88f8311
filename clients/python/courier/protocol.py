"""The wire protocol as bytes and values, with no I/O (PROTOCOL.md sections 1
to 5, and the version 2 additions of ROUND4).

Requests are built as argument lists by the ``*_args`` functions (one per
operation, so the client and the vector tests use the same code), framed by
:func:`encode_frame`; reply bodies are read by :func:`decode_reply` into the
typed results below. Shapes follow PROTOCOL.md exactly: an optional trailing
element that is not used is left out, not sent as ``nil``, so a request keeps
the shape that brokers without the element read.

MessagePack comes from the ``msgpack`` package with ``use_bin_type=True``:
``bytes`` pack as ``bin`` and ``str`` as ``str``, integers in their shortest
unsigned form, dicts in insertion order — the same bytes the broker writes.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import msgpack

from .errors import CourierError, ProtocolError, from_reply

PROTOCOL_VERSION = 2
FRAME_HEADER_LEN = 4
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
MAX_PULL_MESSAGES = 65_536
MAX_PULL_WAIT_MS = 600_000
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1

# Operation codes (PROTOCOL.md section 4; 16 and 17 from ROUND4).
HELLO = 1
REGISTER_PUBLISHER = 2
CREATE_TOPIC = 3
DELETE_TOPIC = 4
PUBLISH = 5
PUBLISH_BATCH = 6
REGISTER_SUBSCRIBER = 7
SUBSCRIBE = 8
UNSUBSCRIBE = 9
PULL = 10
ACK = 11
STATS = 12
END_SESSION = 13
LIST_TOPICS = 14
TOPIC_INFO = 15
SEEK = 16
FETCH = 17

OP_NAMES: Dict[int, str] = {
    HELLO: "HELLO",
    REGISTER_PUBLISHER: "REGISTER_PUBLISHER",
    CREATE_TOPIC: "CREATE_TOPIC",
    DELETE_TOPIC: "DELETE_TOPIC",
    PUBLISH: "PUBLISH",
    PUBLISH_BATCH: "PUBLISH_BATCH",
    REGISTER_SUBSCRIBER: "REGISTER_SUBSCRIBER",
    SUBSCRIBE: "SUBSCRIBE",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    PULL: "PULL",
    ACK: "ACK",
    STATS: "STATS",
    END_SESSION: "END_SESSION",
    LIST_TOPICS: "LIST_TOPICS",
    TOPIC_INFO: "TOPIC_INFO",
    SEEK: "SEEK",
    FETCH: "FETCH",
}

Payload = Union[bytes, bytearray, memoryview, str]
#: A subscription position: ``"new"``, ``"earliest"``, an offset, or
#: ``{"time_ms": unix_ms}``.
Position = Union[str, int, Mapping[str, int]]


# ----------------------------------------------------------------- results


class Message(NamedTuple):
    """One delivered message."""

    topic: str
    offset: int
    payload: bytes
    #: Append time in Unix ms; only FETCH reports it (``None`` from PULL).
    time_ms: Optional[int] = None

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (replacing invalid bytes)."""
        return self.payload.decode("utf-8", "replace")


class Group(NamedTuple):
    """One topic's messages in a pull reply, at consecutive offsets."""

    topic: str
    first_offset: int
    payloads: List[bytes]
    #: Messages retention dropped unread before ``first_offset`` (ROUND4's
    #: optional 4th element; 0 when absent).
    lost: int = 0

    def messages(self) -> List[Message]:
        return [
            Message(self.topic, self.first_offset + i, p)
            for i, p in enumerate(self.payloads)
        ]


class Messages(List[Message]):
    """What :meth:`courier.Client.pull` returns: a list of :class:`Message`,
    with ``.lost``, the messages retention dropped unread, by topic (empty
    almost always)."""

    lost: Dict[str, int]

    def __init__(self, items: Sequence[Message] = (), lost: Optional[Dict[str, int]] = None):
        super().__init__(items)
        self.lost = lost or {}


class PublishResult(NamedTuple):
    offset: int
    subscribers: int


class BatchResult(NamedTuple):
    first_offset: int
    count: int  # type: ignore[assignment]  # shadows tuple.count, as the protocol names it
    subscribers: int


class Registration(NamedTuple):
    """A REGISTER_SUBSCRIBER reply. ``int(reg)`` is the session id."""

    subscriber_id: int
    topics: List[str]
    more: bool

    def __index__(self) -> int:
        return self.subscriber_id

    def __int__(self) -> int:
        return self.subscriber_id


class TopicPage(NamedTuple):
    topics: List[Dict[str, Any]]
    next: Optional[str]


class FetchResult(NamedTuple):
    messages: List[Message]
    next_offset: int
    earliest_offset: int
    end_offset: int


# ----------------------------------------------------------------- encoding

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode_frame(value: Any) -> bytes:
    """One frame: the 4-byte big-endian length, then ``value`` packed."""
    body = _packer.pack(value)
    return struct.pack(">I", len(body)) + body


def payload_bytes(payload: Payload) -> bytes:
    """A payload as bytes: ``str`` is sent as its UTF-8."""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"a payload is str or bytes, not {type(payload).__name__}")


def _uint(value: Any, what: str, limit: int = MAX_U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{what} must be an integer from 0 to {limit}, not {value!r}")
    return value


def _topic(topic: Any) -> str:
    if not isinstance(topic, str):
        raise TypeError(f"a topic name is a str, not {type(topic).__name__}")
    return topic


def _trim(args: List[Any], required: int) -> List[Any]:
    """Drops trailing ``None`` optional elements beyond ``required``."""
    while len(args) > required and args[-1] is None:
        args.pop()
    return args


def position_value(position: Position) -> Any:
    """Checks a SUBSCRIBE / SEEK position and returns its wire value."""
    if position in ("new", "earliest"):
        return position
    if isinstance(position, int) and not isinstance(position, bool):
        return _uint(position, "an offset")
    if isinstance(position, Mapping) and set(position) == {"time_ms"}:
        return {"time_ms": _uint(position["time_ms"], "time_ms")}
    raise ValueError(
        f'a position is "new", "earliest", an offset or {{"time_ms": ms}}, not {position!r}'
    )


def hello_args(
    client_name: str, credentials: Optional[Mapping[str, str]] = None, version: int = PROTOCOL_VERSION
) -> List[Any]:
    args: List[Any] = [version, client_name]
    if credentials is not None:
        args.append({"user": credentials["user"], "token": credentials["token"]})
    return args


def register_publisher_args(producer_id: Optional[str] = None) -> List[Any]:
    if producer_id is None:
        return []
    if not isinstance(producer_id, str) or not 1 <= len(producer_id.encode()) <= 255:
        raise ValueError("producer_id is a str of 1 to 255 bytes of UTF-8")
    return [producer_id]


def create_topic_args(
    topic: str, retain_ms: Optional[int] = None, retain_bytes: Optional[int] = None
) -> List[Any]:
    options: Dict[str, int] = {}
    if retain_ms is not None:
        options["retain_ms"] = _uint(retain_ms, "retain_ms")
    if retain_bytes is not None:
        options["retain_bytes"] = _uint(retain_bytes, "retain_bytes")
    return [_topic(topic), options] if options else [_topic(topic)]


def topic_args(topic: str) -> List[Any]:
    """DELETE_TOPIC, UNSUBSCRIBE, TOPIC_INFO: ``[topic]``."""
    return [_topic(topic)]


def publish_args(topic: str, payload: Payload, seq: Optional[int] = None) -> List[Any]:
    args: List[Any] = [_topic(topic), payload_bytes(payload)]
    if seq is not None:
        args.append(_uint(seq, "seq"))
    return args


def publish_batch_args(
    topic: str, payloads: Sequence[Payload], first_seq: Optional[int] = None
) -> List[Any]:
    args: List[Any] = [_topic(topic), [payload_bytes(p) for p in payloads]]
    if first_seq is not None:
        args.append(_uint(first_seq, "first_seq"))
    return args


def register_subscriber_args(
    subscriber_id: Optional[int] = None, timeout_ms: Optional[int] = None
) -> List[Any]:
    sid = None if subscriber_id is None else _uint(int(subscriber_id), "subscriber_id")
    ms = None if timeout_ms is None else _uint(timeout_ms, "timeout_ms")
    return _trim([sid, ms], 1)


def subscribe_args(topic: str, position: Optional[Position] = None) -> List[Any]:
    if position is None:
        return [_topic(topic)]
    return [_topic(topic), position_value(position)]


def seek_args(topic: str, position: Position) -> List[Any]:
    return [_topic(topic), position_value(position)]


def pull_args(
    topic: Optional[str], max_messages: int, max_bytes: int, wait_ms: int, ack: bool
) -> List[Any]:
    return [
        None if topic is None else _topic(topic),
        _uint(max_messages, "max_messages", MAX_U32),
        _uint(max_bytes, "max_bytes", MAX_U32),
        _uint(wait_ms, "wait_ms", MAX_U32),
        bool(ack),
    ]


def ack_args(topic: str, offset: int) -> List[Any]:
    return [_topic(topic), _uint(offset, "offset")]


def list_topics_args(after: Optional[str] = None, limit: int = 1000) -> List[Any]:
    return [None if after is None else _topic(after), _uint(limit, "limit", MAX_U32)]


def fetch_args(topic: str, offset: int, max_messages: int, max_bytes: int) -> List[Any]:
    return [
        _topic(topic),
        _uint(offset, "offset"),
        _uint(max_messages, "max_messages", MAX_U32),
        _uint(max_bytes, "max_bytes", MAX_U32),
    ]


def request(op: int, request_id: int, args: Sequence[Any]) -> bytes:
    """The frame of request ``[op, id, *args]``."""
    return encode_frame([op, request_id, *args])


# ----------------------------------------------------------------- decoding


def unpack(body: bytes) -> Any:
    """A frame body as a Python value: ``bin`` becomes ``bytes``, ``str``
    becomes ``str``; trailing bytes are an error (PROTOCOL.md section 1)."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as e:
        raise ProtocolError(f"unreadable reply: {e}") from None


def split_reply(value: Any) -> "tuple[int, int, Any]":
    """``[id, status, body]`` of a reply value, checked."""
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not _is_uint(value[0])
        or not _is_uint(value[1])
    ):
        raise ProtocolError(f"not a reply: {value!r:.200}")
    return value[0], value[1], value[2]


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _need(ok: bool, op: int, body: Any) -> None:
    if not ok:
        raise ProtocolError(f"bad {OP_NAMES.get(op, op)} reply body: {body!r:.200}")


def _groups(body: Any) -> List[Group]:
    _need(isinstance(body, list), PULL, body)
    groups = []
    for g in body:
        _need(
            isinstance(g, list)
            and len(g) in (3, 4)
            and isinstance(g[0], str)
            and _is_uint(g[1])
            and isinstance(g[2], list)
            and all(isinstance(p, bytes) for p in g[2])
            and (len(g) == 3 or _is_uint(g[3])),
            PULL,
            body,
        )
        groups.append(Group(g[0], g[1], g[2], g[3] if len(g) == 4 else 0))
    return groups


def decode_body(op: int, body: Any) -> Any:
    """The typed result of a successful reply to a request of ``op``."""
    if op in (HELLO, STATS, TOPIC_INFO):
        _need(isinstance(body, dict), op, body)
        return body
    if op in (REGISTER_PUBLISHER, SUBSCRIBE, SEEK):
        _need(_is_uint(body), op, body)
        return body
    if op in (CREATE_TOPIC, DELETE_TOPIC, UNSUBSCRIBE, ACK, END_SESSION):
        _need(body is None, op, body)
        return None
    if op == PUBLISH:
        _need(isinstance(body, list) and len(body) == 2 and all(map(_is_uint, body)), op, body)
        return PublishResult(*body)
    if op == PUBLISH_BATCH:
        _need(isinstance(body, list) and len(body) == 3 and all(map(_is_uint, body)), op, body)
        return BatchResult(*body)
    if op == REGISTER_SUBSCRIBER:
        _need(
            isinstance(body, list)
            and len(body) == 3
            and _is_uint(body[0])
            and isinstance(body[1], list)
            and all(isinstance(t, str) for t in body[1])
            and isinstance(body[2], bool),
            op,
            body,
        )
        return Registration(body[0], body[1], body[2])
    if op == PULL:
        return _groups(body)
    if op == LIST_TOPICS:
        _need(
            isinstance(body, dict)
            and isinstance(body.get("topics"), list)
            and (body.get("next") is None or isinstance(body.get("next"), str)),
            op,
            body,
        )
        return TopicPage(body["topics"], body.get("next"))
    if op == FETCH:
        _need(isinstance(body, dict) and isinstance(body.get("messages"), list), op, body)
        topic = ""  # filled in by the caller, who knows which topic it asked
        messages = []
        for m in body["messages"]:
            _need(
                isinstance(m, list)
                and len(m) == 3
                and _is_uint(m[0])
                and _is_uint(m[1])
                and isinstance(m[2], bytes),
                op,
                body,
            )
            messages.append(Message(topic, m[0], m[2], m[1]))
        fields = [body.get(k) for k in ("next_offset", "earliest_offset", "end_offset")]
        _need(all(map(_is_uint, fields)), op, body)
        return FetchResult(messages, *fields)
    raise ProtocolError(f"no reply shape for operation {op}")


def decode_reply(op: int, body: bytes) -> "tuple[int, Union[Any, CourierError]]":
    """A reply frame body to a request of ``op``: ``(id, result)`` where a
    failure's result is the exception (returned, not raised)."""
    rid, status, value = split_reply(unpack(body))
    if status != 0:
        if not isinstance(value, str):
            raise ProtocolError(f"error reply without a message: {value!r:.200}")
        return rid, from_reply(status, value)
    return rid, decode_body(op, value)
