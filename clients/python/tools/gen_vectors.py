#!/usr/bin/env python3
"""Writes tests/vectors.json, the protocol test vectors (schema: the file's
"schema" object, and PROTOCOL.md "Test vectors").

The bytes come from a small MessagePack writer in this file, written from
PROTOCOL.md section 2 and the MessagePack spec alone: it shares no code with
the Rust codec (src/codec/) or the Python client (which uses the msgpack
package), so both are checked against a third source. Every vector marked
with a PROTOCOL.md section also carries the document's hex: the generator
checks that its writer produces exactly those bytes and that the hex occurs
in PROTOCOL.md, so document, generator and file agree.

Run from the repository root: python3 clients/python/tools/gen_vectors.py
Run it again whenever PROTOCOL.md's examples change (8.1's HELLO reply
changes with every key ServerInfo gains; its value is read from the hex).
"""

import json
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class Bin:
    def __init__(self, data: bytes):
        self.data = data


class Map:
    def __init__(self, *pairs):
        self.pairs = list(pairs)


# ------------------------------------------------------------ the writer


def pack(v) -> bytes:
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        assert v >= 0
        if v < 0x80:
            return bytes([v])
        if v <= 0xFF:
            return b"\xcc" + struct.pack(">B", v)
        if v <= 0xFFFF:
            return b"\xcd" + struct.pack(">H", v)
        if v <= 0xFFFFFFFF:
            return b"\xce" + struct.pack(">I", v)
        return b"\xcf" + struct.pack(">Q", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n <= 0xFF:
            return b"\xd9" + bytes([n]) + b
        if n <= 0xFFFF:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(v, Bin):
        n = len(v.data)
        if n <= 0xFF:
            return b"\xc4" + bytes([n]) + v.data
        if n <= 0xFFFF:
            return b"\xc5" + struct.pack(">H", n) + v.data
        return b"\xc6" + struct.pack(">I", n) + v.data
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + struct.pack(">H", n))
        return head + b"".join(pack(x) for x in v)
    if isinstance(v, Map):
        n = len(v.pairs)
        head = bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n))
        return head + b"".join(pack(k) + pack(x) for k, x in v.pairs)
    raise TypeError(v)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def to_json(v):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v if v < 2**53 else {"int": str(v)}
    if isinstance(v, Bin):
        return {"bin": v.data.hex()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, Map):
        return {"map": [[to_json(k), to_json(x)] for k, x in v.pairs]}
    raise TypeError(v)


def spaced(b: bytes) -> str:
    return " ".join(f"{x:02x}" for x in b)


# ------------------------------------------------------------ the vectors

VECTORS = []
DOC = re.sub(r"\s+", " ", (ROOT / "PROTOCOL.md").read_text())


def add(name, kind, op, value, doc_hex=None, source=None, pending=None, raw=None, canonical=True,
        branch_hex=None):
    """One vector. ``doc_hex``: the bytes as PROTOCOL.md shows them (checked
    against the writer and the document). ``raw``: bytes given by hand for a
    decode-only (non-shortest) form. ``canonical=False``: a form encoders do
    not write (an optional element sent as nil), for decoders only."""
    if raw is not None:
        data, canonical = raw, False
    else:
        data = frame(pack(value))
    if doc_hex is not None:
        if spaced(data) != doc_hex:
            sys.exit(f"{name}: the writer gives\n  {spaced(data)}\nPROTOCOL.md shows\n  {doc_hex}")
        if doc_hex not in DOC:
            sys.exit(f"{name}: hex not found in PROTOCOL.md")
    if branch_hex is not None and spaced(data) != branch_hex:
        # The hex of another branch's PROTOCOL.md, not merged here yet.
        sys.exit(f"{name}: the writer gives\n  {spaced(data)}\n{source} shows\n  {branch_hex}")
    v = {"name": name, "kind": kind, "op": op, "value": to_json(value), "hex": spaced(data)}
    if not canonical:
        v["canonical"] = False
    if source:
        v["source"] = source
    if pending:
        v["pending"] = pending
    VECTORS.append(v)


def req(name, value, **kw):
    add(name, "request", value[0], value, **kw)


def rep(name, op, value, **kw):
    add(name, "reply", op, value, **kw)


NEWS = "news"
HELLO_HEX = re.search(r"Reply `\[1, 0, \{\.\.\.\}\]` \(\d+ bytes on the wire\): ``` ([0-9a-f ]+?) ```", DOC)
if HELLO_HEX is None:
    sys.exit("PROTOCOL.md 8.1: HELLO reply hex not found")


def read_hello_map(hex_text: str) -> Map:
    """The HELLO reply's map, read from the document's bytes, so that a key
    added to ServerInfo (and to 8.1's hex) needs no edit here. Only what
    that map holds is read: fixmap / map 16 of str keys, uint and str values."""
    data = bytes.fromhex(hex_text.replace(" ", ""))[4:]
    assert data[:3] == b"\x93\x01\x00", "8.1 reply starts [1, 0, "
    pos = 3

    def take(n):
        nonlocal pos
        pos += n
        return data[pos - n : pos]

    def read():
        b = take(1)[0]
        if b < 0x80:
            return b
        if 0xA0 <= b <= 0xBF:
            return take(b & 0x1F).decode()
        if b == 0xD9:
            return take(take(1)[0]).decode()
        sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
        if b in sizes:
            return int.from_bytes(take(sizes[b]), "big")
        sys.exit(f"8.1: unexpected byte {b:#x} in the HELLO map")

    head = take(1)[0]
    count = head & 0x0F if 0x80 <= head <= 0x8F else int.from_bytes(take(2), "big")
    pairs = [(read(), read()) for _ in range(count)]
    assert pos == len(data), "one map, nothing after it"
    return Map(*pairs)


HELLO_MAP = read_hello_map(HELLO_HEX.group(1))

S = "PROTOCOL.md 8.%s"
req("HELLO request", [1, 1, 2, "demo"], doc_hex="00 00 00 09 94 01 01 02 a4 64 65 6d 6f", source=S % 1)
rep("HELLO reply", 1, [1, 0, HELLO_MAP], doc_hex=HELLO_HEX.group(1), source=S % 1)
req("REGISTER_PUBLISHER request", [2, 2], doc_hex="00 00 00 03 92 02 02", source=S % 2)
rep("REGISTER_PUBLISHER reply", 2, [2, 0, 1], doc_hex="00 00 00 04 93 02 00 01", source=S % 2)
req("CREATE_TOPIC request", [3, 3, NEWS], doc_hex="00 00 00 08 93 03 03 a4 6e 65 77 73", source=S % 3)
rep("CREATE_TOPIC reply", 3, [3, 0, None], doc_hex="00 00 00 04 93 03 00 c0", source=S % 3)
req("REGISTER_SUBSCRIBER request, new session", [7, 2, None], doc_hex="00 00 00 04 93 07 02 c0", source=S % 4)
rep(
    "REGISTER_SUBSCRIBER reply, a 64-bit id",
    7,
    [2, 0, [9922162695076828895, [], False]],
    doc_hex="00 00 00 0f 93 02 00 93 cf 89 b2 9a 66 bb af d6 df 90 c2",
    source=S % 4,
)
req("SUBSCRIBE request", [8, 3, NEWS], doc_hex="00 00 00 08 93 08 03 a4 6e 65 77 73", source=S % 4)
rep("SUBSCRIBE reply", 8, [3, 0, 0], doc_hex="00 00 00 04 93 03 00 00", source=S % 4)
for suffix, rid, payload, offset, req_hex, rep_hex in (
    ("", 4, b"Hello", 0,
     "00 00 00 0f 94 05 04 a4 6e 65 77 73 c4 05 48 65 6c 6c 6f", "00 00 00 06 93 04 00 92 00 01"),
    (", second", 5, b"World", 1,
     "00 00 00 0f 94 05 05 a4 6e 65 77 73 c4 05 57 6f 72 6c 64", "00 00 00 06 93 05 00 92 01 01"),
):
    req(f"PUBLISH request{suffix}", [5, rid, NEWS, Bin(payload)], doc_hex=req_hex, source=S % 5)
    rep(f"PUBLISH reply{suffix}", 5, [rid, 0, [offset, 1]], doc_hex=rep_hex, source=S % 5)
req(
    "PULL request",
    [10, 4, NEWS, 100, 65536, 5000, False],
    doc_hex="00 00 00 12 97 0a 04 a4 6e 65 77 73 64 ce 00 01 00 00 cd 13 88 c2",
    source=S % 6,
)
rep(
    "PULL reply, two messages",
    10,
    [4, 0, [[NEWS, 0, [Bin(b"Hello"), Bin(b"World")]]]],
    doc_hex="00 00 00 1a 93 04 00 91 93 a4 6e 65 77 73 00 92 c4 05 48 65 6c 6c 6f c4 05 57 6f 72 6c 64",
    source=S % 6,
)
req("ACK request", [11, 5, NEWS, 2], doc_hex="00 00 00 09 94 0b 05 a4 6e 65 77 73 02", source=S % 7)
rep("ACK reply", 11, [5, 0, None], doc_hex="00 00 00 04 93 05 00 c0", source=S % 7)
req(
    "SUBSCRIBE request, unknown topic",
    [8, 6, "sports"],
    doc_hex="00 00 00 0a 93 08 06 a6 73 70 6f 72 74 73",
    source=S % 8,
)
rep(
    "UNKNOWN_TOPIC (9) reply",
    8,
    [6, 9, "unknown topic 'sports'"],
    doc_hex="00 00 00 1a 93 06 09 b6 75 6e 6b 6e 6f 77 6e 20 74 6f 70 69 63 20 27 73 70 6f 72 74 73 27",
    source=S % 8,
)
req(
    "PULL request, ack, no wait",
    [10, 7, NEWS, 100, 65536, 0, True],
    doc_hex="00 00 00 10 97 0a 07 a4 6e 65 77 73 64 ce 00 01 00 00 00 c3",
    source=S % 9,
)
rep("PULL reply, empty", 10, [7, 0, []], doc_hex="00 00 00 04 93 07 00 90", source=S % 9)
req("LIST_TOPICS request", [14, 6, None, 10], doc_hex="00 00 00 05 94 0e 06 c0 0a", source=S % 10)


def topic_map(name, next_offset, backlog_messages, backlog_bytes, subscribers):
    return Map(
        ("name", name),
        ("next_offset", next_offset),
        ("backlog_messages", backlog_messages),
        ("backlog_bytes", backlog_bytes),
        ("subscribers", subscribers),
    )


rep(
    "LIST_TOPICS reply",
    14,
    [6, 0, Map(("topics", [topic_map(NEWS, 2, 0, 0, 1)]), ("next", None))],
    doc_hex=(
        "00 00 00 58 93 06 00 82 a6 74 6f 70 69 63 73 91 85 a4 6e 61 6d 65 a4 6e "
        "65 77 73 ab 6e 65 78 74 5f 6f 66 66 73 65 74 02 b0 62 61 63 6b 6c 6f 67 "
        "5f 6d 65 73 73 61 67 65 73 00 ad 62 61 63 6b 6c 6f 67 5f 62 79 74 65 73 "
        "00 ab 73 75 62 73 63 72 69 62 65 72 73 01 a4 6e 65 78 74 c0"
    ),
    source=S % 10,
)
req("END_SESSION request", [13, 8], doc_hex="00 00 00 03 92 0d 08", source=S % 11)
rep("END_SESSION reply", 13, [8, 0, None], doc_hex="00 00 00 04 93 08 00 c0", source=S % 11)
req("TOPIC_INFO request", [15, 7, NEWS], doc_hex="00 00 00 08 93 0f 07 a4 6e 65 77 73", source=S % 11)
rep(
    "TOPIC_INFO reply",
    15,
    [7, 0, topic_map(NEWS, 2, 0, 0, 0)],
    doc_hex=(
        "00 00 00 49 93 07 00 85 a4 6e 61 6d 65 a4 6e 65 77 73 ab 6e 65 78 74 5f "
        "6f 66 66 73 65 74 02 b0 62 61 63 6b 6c 6f 67 5f 6d 65 73 73 61 67 65 73 "
        "00 ad 62 61 63 6b 6c 6f 67 5f 62 79 74 65 73 00 ab 73 75 62 73 63 72 69 "
        "62 65 72 73 00"
    ),
    source=S % 11,
)
rep(
    "PULL reply, one message",
    10,
    [4, 0, [[NEWS, 0, [Bin(b"Hello")]]]],
    doc_hex="00 00 00 13 93 04 00 91 93 a4 6e 65 77 73 00 91 c4 05 48 65 6c 6c 6f",
    source=S % 12,
)
req("ACK request, offset 1", [11, 5, NEWS, 1], doc_hex="00 00 00 09 94 0b 05 a4 6e 65 77 73 01", source=S % 12)
req("REGISTER_SUBSCRIBER request, id 9", [7, 9, None], doc_hex="00 00 00 04 93 07 09 c0", source=S % 13)
req("SUBSCRIBE request, id 10", [8, 10, NEWS], doc_hex="00 00 00 08 93 08 0a a4 6e 65 77 73", source=S % 13)
rep("SUBSCRIBE reply, next offset 2", 8, [10, 0, 2], doc_hex="00 00 00 04 93 0a 00 02", source=S % 13)
for pid in (11, 12, 14):
    req(
        f"PULL request, waiting 30 s, id {pid}",
        [10, pid, NEWS, 100, 65536, 30000, False],
        doc_hex=f"00 00 00 12 97 0a {pid:02x} a4 6e 65 77 73 64 ce 00 01 00 00 cd 75 30 c2",
        source=S % 13,
    )
for pid, oid, off, ch in ((8, 11, 2, "A"), (9, 12, 3, "B")):
    req(
        f"PUBLISH request {ch!r}",
        [5, pid, NEWS, Bin(ch.encode())],
        doc_hex=f"00 00 00 0b 94 05 {pid:02x} a4 6e 65 77 73 c4 01 {ord(ch):02x}",
        source=S % 13,
    )
    rep(
        f"PUBLISH reply, offset {off}",
        5,
        [pid, 0, [off, 1]],
        doc_hex=f"00 00 00 06 93 {pid:02x} 00 92 {off:02x} 01",
        source=S % 13,
    )
    rep(
        f"PULL reply {ch!r} to pull {oid}",
        10,
        [oid, 0, [[NEWS, off, [Bin(ch.encode())]]]],
        doc_hex=f"00 00 00 0f 93 {oid:02x} 00 91 93 a4 6e 65 77 73 {off:02x} 91 c4 01 {ord(ch):02x}",
        source=S % 13,
    )
req("ACK request, offset 3", [11, 13, NEWS, 3], doc_hex="00 00 00 09 94 0b 0d a4 6e 65 77 73 03", source=S % 13)
rep("ACK reply, id 13", 11, [13, 0, None], doc_hex="00 00 00 04 93 0d 00 c0", source=S % 13)
req(
    "REGISTER_SUBSCRIBER request with timeout_ms",
    [7, 2, None, 604800000],
    doc_hex="00 00 00 09 94 07 02 c0 ce 24 0c 84 00",
    source="PROTOCOL.md 4.7",
)

# Section 2: integers and headers need not be shortest (decode only).
for label, raw in (
    ("uint 8", "92 02 cc 01"),
    ("uint 64", "92 02 cf 00 00 00 00 00 00 00 01"),
    ("int 8", "92 02 d0 01"),
):
    body = bytes.fromhex(raw.replace(" ", ""))
    req(f"REGISTER_PUBLISHER request, id 1 as {label}", [2, 1], raw=frame(body), source="PROTOCOL.md 2")
body = bytes.fromhex("dc000303" "03" "a46e657773")
req("CREATE_TOPIC request, array 16 header", [3, 3, NEWS], raw=frame(body), source="PROTOCOL.md 2")
body = bytes.fromhex("9405" "01" "d9046e657773" "c50002" "6869")
req("PUBLISH request, str 8 topic and bin 16 payload", [5, 1, NEWS, Bin(b"hi")], raw=frame(body), source="PROTOCOL.md 2")
body = bytes.fromhex("9405" "01" "a46e657773" "a26869")
req("PUBLISH request, payload sent as str", [5, 1, NEWS, "hi"], raw=frame(body), source="PROTOCOL.md 2")

# Every operation (the ones section 8 does not show).
req("DELETE_TOPIC request", [4, 20, NEWS])
rep("DELETE_TOPIC reply", 4, [20, 0, None])
req("PUBLISH_BATCH request", [6, 21, NEWS, [Bin(b"a"), Bin(b""), Bin(bytes(range(256)))]])
rep("PUBLISH_BATCH reply", 6, [21, 0, [5, 3, 2]])
req("PUBLISH_BATCH request, empty", [6, 22, NEWS, []])
rep("PUBLISH_BATCH reply, empty", 6, [22, 0, [8, 0, 2]])
req("PUBLISH request, empty payload", [5, 23, NEWS, Bin(b"")])
req("PUBLISH request, every byte value", [5, 24, NEWS, Bin(bytes(range(256)))])
req("PUBLISH request, 300-byte payload (bin 16)", [5, 25, "big", Bin(bytes(i % 251 for i in range(300)))])
req("REGISTER_SUBSCRIBER request, resume", [7, 26, 9922162695076828895])
req("REGISTER_SUBSCRIBER request, resume, nil timeout", [7, 27, 12345, None], canonical=False)
rep("REGISTER_SUBSCRIBER reply, resumed", 7, [26, 0, [9922162695076828895, [NEWS, "sports"], True]])
req("UNSUBSCRIBE request", [9, 28, NEWS])
rep("UNSUBSCRIBE reply", 9, [28, 0, None])
req("PULL request, all topics", [10, 29, None, 0, 0, 600000, True])
rep(
    "PULL reply, two topics",
    10,
    [29, 0, [["a", 0, [Bin(b"x")]], ["b", 2**40, [Bin(b""), Bin(b"\x00\xff")]]]],
)
req("STATS request", [12, 30])
MEMORY = Map(
    *[(k, 100 * (i + 1)) for i, k in enumerate(
        ["held_requests", "messages", "payloads", "read_buffers", "sessions", "subscriptions", "topics", "write_buffers"]
    )]
)
rep(
    "STATS reply",
    12,
    [
        30,
        0,
        Map(
            ("uptime_ms", 123456),
            ("connections", 2),
            ("connections_total", 5),
            ("topics", 1),
            ("publishers", 1),
            ("subscribers", 1),
            ("subscriptions", 1),
            ("waiting_pulls", 0),
            ("messages_in", 4),
            ("messages_out", 4),
            ("bytes_in", 12),
            ("bytes_out", 12),
            ("backlog_messages", 0),
            ("backlog_bytes", 0),
            ("errors", Map(("UNKNOWN_TOPIC", 1))),
            ("memory", MEMORY),
            ("memory_total", 3600),
            ("memory_limit", 1073741824),
            ("publishes_held", 1),
            ("held_now", 0),
            ("held_dropped", 0),
            ("held_input_pauses", 0),
            ("messages_evicted", 0),
            ("disk_reads", 0),
            ("disk_messages_read", 0),
            ("disk_reads_outstanding", 0),
            ("disk_bytes", 0),
        ),
    ],
)
req("LIST_TOPICS request, after a name", [14, 31, NEWS, 1000])
rep(
    "LIST_TOPICS reply, a next page",
    14,
    [31, 0, Map(("topics", [topic_map("orders", 2**53 + 1, 3, 300, 2)]), ("next", "orders"))],
)
req("HELLO request, version 1", [1, 1, 1, ""])
req("HELLO request, long client name", [1, 1, 2, "c" * 40])

ERRORS = [
    (1, "MALFORMED_REQUEST", 5, "malformed request: element 3 (payload): expected bin or str"),
    (2, "UNKNOWN_OPERATION", 5, "unknown operation 99"),
    (3, "FRAME_TOO_LARGE", 5, "frame of 2000000 bytes exceeds the maximum of 1048576"),
    (4, "UNSUPPORTED_VERSION", 1, "unsupported protocol version 1; this broker speaks 2"),
    (5, "HANDSHAKE_REQUIRED", 12, "the first request must be HELLO"),
    (6, "HANDSHAKE_REPEATED", 1, "HELLO was already done"),
    (7, "NOT_REGISTERED", 3, "register as a publisher first"),
    (8, "INVALID_TOPIC_NAME", 3, "invalid topic name 'has space'"),
    (9, "UNKNOWN_TOPIC", 4, "unknown topic 'sports'"),
    (10, "TOPIC_EXISTS", 3, "topic 'news' already exists"),
    (11, "TOPIC_FULL", 5, "topic 'news' is full"),
    (12, "TOPIC_DELETED", 10, "topic 'news' was deleted"),
    (13, "NOT_SUBSCRIBED", 10, "not subscribed to 'news'"),
    (14, "UNKNOWN_SUBSCRIBER", 7, "unknown subscriber 42"),
    (15, "PAYLOAD_TOO_LARGE", 5, "payload of 2000000 bytes exceeds 1048064"),
    (16, "INVALID_ACK", 11, "ack at 9 beyond delivered 2"),
    (17, "TOO_MANY_TOPICS", 3, "the broker holds its maximum of 100000 topics"),
    (18, "TOO_MANY_CONNECTIONS", 1, "too many connections"),
    (19, "SESSION_TAKEN_OVER", 10, "another connection resumed this session"),
    (20, "TIMEOUT", 1, "handshake timed out"),
    (21, "SHUTTING_DOWN", 10, "the broker is shutting down"),
    (22, "TOO_MANY_SUBSCRIBERS", 8, "topic 'news' has its maximum of subscribers"),
    (23, "BROKER_FULL", 5, "the memory budget is used up"),
    (24, "BATCH_TOO_LARGE", 6, "batch of 2 messages exceeds max_backlog_messages 1"),
    (25, "TOO_MANY_SESSIONS", 7, "the broker holds its maximum of sessions"),
    (26, "TOO_MANY_SUBSCRIPTIONS", 8, "the session holds its maximum of subscriptions"),
    (27, "STORAGE_UNAVAILABLE", 5, "the log could not be written"),
]
for code, name, op, text in ERRORS:
    # Errors that answer no request (3.4) carry id 0.
    rid = 0 if name in ("FRAME_TOO_LARGE", "TOO_MANY_CONNECTIONS", "TIMEOUT") else 40 + code
    rep(f"{name} ({code}) reply", op, [rid, code, text])

# This round's additions (protocol version 2's optional elements and
# operations, 4.16-4.22), checked against the Rust codec like the others.
R4 = None
req("CREATE_TOPIC request with retention", [3, 50, NEWS, Map(("retain_ms", 3600000), ("retain_bytes", 1048576))], pending=R4)
req("CREATE_TOPIC request, nil options", [3, 51, NEWS, None], pending=R4, canonical=False)
req("CREATE_TOPIC request, empty options", [3, 52, NEWS, Map()], pending=R4, canonical=False)
req("SUBSCRIBE request, earliest", [8, 53, NEWS, "earliest"], pending=R4)
req("SUBSCRIBE request, new", [8, 54, NEWS, "new"], pending=R4)
req("SUBSCRIBE request, offset", [8, 55, NEWS, 5], pending=R4)
req("SUBSCRIBE request, time", [8, 56, NEWS, Map(("time_ms", 1767225600000))], pending=R4)
req("SEEK request, earliest", [16, 57, NEWS, "earliest"], pending=R4)
req("SEEK request, time", [16, 58, NEWS, Map(("time_ms", 1767225600000))], pending=R4)
rep("SEEK reply", 16, [57, 0, 3], pending=R4)
req("FETCH request", [17, 59, NEWS, 0, 100, 65536], pending=R4)
rep(
    "FETCH reply",
    17,
    [
        59,
        0,
        Map(
            ("messages", [[3, 1767225600000, Bin(b"Hello")], [4, 1767225600001, Bin(b"")]]),
            ("next_offset", 5),
            ("earliest_offset", 3),
            ("end_offset", 5),
        ),
    ],
    pending=R4,
)
rep("PULL reply, group with lost", 10, [60, 0, [[NEWS, 7, [Bin(b"x")], 3]]], pending=R4)
rep("PULL reply, only lost", 10, [61, 0, [[NEWS, 10, [], 10]]], pending=R4)
req("REGISTER_PUBLISHER request with producer_id", [2, 62, "orders-service-1"], pending=R4)
req("PUBLISH request with seq", [5, 63, NEWS, Bin(b"Hello"), 1], pending=R4)
req("PUBLISH_BATCH request with first_seq", [6, 64, NEWS, [Bin(b"a"), Bin(b"b")], 2], pending=R4)
req("HELLO request with credentials", [1, 1, 2, "demo", Map(("user", "alice"), ("token", "s3cret"))], pending=R4)
req("HELLO request, nil credentials", [1, 1, 2, "demo", None], pending=R4, canonical=False)
for code, name, op, text in (
    (28, "SEQUENCE_GAP", 5, "seq 5 after 3 for producer 'p' on 'news'"),
    (29, "DUPLICATE_SEQUENCE", 5, "seq 1 of producer 'p' on 'news' was stored long ago"),
    (30, "AUTH_FAILED", 1, "authentication failed"),
    (31, "FORBIDDEN", 5, "user 'bob' may not publish to 'news'"),
    (32, "DISK_FULL", 5, "--max-disk reached"),
):
    rid = 1 if name == "AUTH_FAILED" else 40 + code
    rep(f"{name} ({code}) reply", op, [rid, code, text], pending=R4)

# The examples of PROTOCOL.md 8.14 (replay) and 8.15 (credentials).
R12 = "PROTOCOL.md 8.14 (replay)"
R13 = "PROTOCOL.md 8.15 (credentials)"
PM = None
LOG = "log"
for name, kind, op, value, hex_text, src in (
    ("replay: REGISTER_PUBLISHER request with producer_id", "request", 2, [2, 2, "p1"],
     "00 00 00 06 93 02 02 a2 70 31", R12),
    ("replay: CREATE_TOPIC request kept a day", "request", 3, [3, 3, LOG, Map(("retain_ms", 86400000))],
     "00 00 00 17 94 03 03 a3 6c 6f 67 81 a9 72 65 74 61 69 6e 5f 6d 73 ce 05 26 5c 00", R12),
    ("replay: PUBLISH request seq 1", "request", 5, [5, 4, LOG, Bin(b"A"), 1],
     "00 00 00 0b 95 05 04 a3 6c 6f 67 c4 01 41 01", R12),
    ("replay: PUBLISH reply, no subscriber", "reply", 5, [4, 0, [0, 0]],
     "00 00 00 06 93 04 00 92 00 00", R12),
    ("replay: PUBLISH request seq 1 again", "request", 5, [5, 5, LOG, Bin(b"A"), 1],
     "00 00 00 0b 95 05 05 a3 6c 6f 67 c4 01 41 01", R12),
    ("replay: PUBLISH reply, the original one", "reply", 5, [5, 0, [0, 0]],
     "00 00 00 06 93 05 00 92 00 00", R12),
    ("replay: PUBLISH request seq 3", "request", 5, [5, 6, LOG, Bin(b"C"), 3],
     "00 00 00 0b 95 05 06 a3 6c 6f 67 c4 01 43 03", R12),
    ("replay: SEQUENCE_GAP reply", "reply", 5,
     [6, 28, "seq 3 of producer 'p1' skips ahead: the last stored is 1, so the next must be 2"],
     "00 00 00 54 93 06 1c d9 4f 73 65 71 20 33 20 6f 66 20 70 72 6f 64 75 63 65 72 20 27 70 31 27 20 "
     "73 6b 69 70 73 20 61 68 65 61 64 3a 20 74 68 65 20 6c 61 73 74 20 73 74 6f 72 65 64 20 69 73 20 "
     "31 2c 20 73 6f 20 74 68 65 20 6e 65 78 74 20 6d 75 73 74 20 62 65 20 32", R12),
    ("replay: SUBSCRIBE request from the earliest", "request", 8, [8, 3, LOG, "earliest"],
     "00 00 00 10 94 08 03 a3 6c 6f 67 a8 65 61 72 6c 69 65 73 74", R12),
    ("replay: SEEK request by time", "request", 16, [16, 4, LOG, Map(("time_ms", 0))],
     "00 00 00 11 94 10 04 a3 6c 6f 67 81 a7 74 69 6d 65 5f 6d 73 00", R12),
    ("replay: SEEK reply", "reply", 16, [4, 0, 0], "00 00 00 04 93 04 00 00", R12),
    ("replay: FETCH request", "request", 17, [17, 5, LOG, 0, 10, 65536],
     "00 00 00 0e 96 11 05 a3 6c 6f 67 00 0a ce 00 01 00 00", R12),
    ("replay: FETCH reply", "reply", 17,
     [5, 0, Map(("messages", [[0, 1796112000000, Bin(b"A")]]), ("next_offset", 1),
                ("earliest_offset", 0), ("end_offset", 1))],
     "00 00 00 46 93 05 00 84 a8 6d 65 73 73 61 67 65 73 91 93 00 cf 00 00 01 a2 30 9e 24 00 c4 01 41 "
     "ab 6e 65 78 74 5f 6f 66 66 73 65 74 01 af 65 61 72 6c 69 65 73 74 5f 6f 66 66 73 65 74 00 aa 65 "
     "6e 64 5f 6f 66 66 73 65 74 01", R12),
    ("credentials: PUBLISH request to a topic not granted", "request", 5, [5, 3, "sports", Bin(b"Hi")],
     "00 00 00 0e 94 05 03 a6 73 70 6f 72 74 73 c4 02 48 69", R13),
    ("credentials: FORBIDDEN reply", "reply", 5, [3, 31, "user alice may not PUBLISH on topic sports"],
     "00 00 00 2f 93 03 1f d9 2a 75 73 65 72 20 61 6c 69 63 65 20 6d 61 79 20 6e 6f 74 20 50 55 42 4c "
     "49 53 48 20 6f 6e 20 74 6f 70 69 63 20 73 70 6f 72 74 73", R13),
    ("credentials: HELLO request with a wrong token", "request", 1,
     [1, 1, 2, "demo", Map(("user", "alice"), ("token", "guess"))],
     "00 00 00 21 95 01 01 02 a4 64 65 6d 6f 82 a4 75 73 65 72 a5 61 6c 69 63 65 a5 74 6f 6b 65 6e a5 "
     "67 75 65 73 73", R13),
    ("credentials: AUTH_FAILED reply", "reply", 1,
     [1, 30, "authentication failed: unknown user or wrong token, or no credentials"],
     "00 00 00 4a 93 01 1e d9 45 61 75 74 68 65 6e 74 69 63 61 74 69 6f 6e 20 66 61 69 6c 65 64 3a 20 "
     "75 6e 6b 6e 6f 77 6e 20 75 73 65 72 20 6f 72 20 77 72 6f 6e 67 20 74 6f 6b 65 6e 2c 20 6f 72 20 "
     "6e 6f 20 63 72 65 64 65 6e 74 69 61 6c 73", R13),
):
    add(name, kind, op, value, source=src, pending=PM, branch_hex=hex_text)

SCHEMA = {
    "about": (
        "Courier protocol test vectors (PROTOCOL.md, 'Test vectors'). Each vector is one frame: "
        "its value as JSON and its exact bytes. Written by clients/python/tools/gen_vectors.py "
        "from an encoder of its own; the PROTOCOL.md ones carry the document's hex."
    ),
    "vector": {
        "name": "what it shows",
        "kind": "'request' (client to broker) or 'reply' (broker to client)",
        "op": "the operation code of the request (for a reply: of the request it answers, which decides the body's shape)",
        "value": "the frame's MessagePack value, in the encoding below",
        "hex": "the whole frame, length prefix included, as space-separated lowercase hex bytes",
        "canonical": "absent or true: the bytes are the shortest form, which encoders must produce exactly; false: a longer form the broker accepts, for decoders only",
        "source": "optional: the PROTOCOL.md section showing these bytes",
        "pending": "optional: a shape defined for a later change, not yet checked against a broker; decoders that do not know it yet may skip it",
    },
    "value_encoding": {
        "null": "nil",
        "true / false": "bool",
        "JSON integer": "an unsigned integer below 2^53",
        "{\"int\": \"<decimal>\"}": "an unsigned integer of any size (used from 2^53 on), exact",
        "JSON string": "MessagePack str (UTF-8)",
        "{\"bin\": \"<hex>\"}": "MessagePack bin, the bytes in lowercase hex ('' for empty)",
        "JSON array": "MessagePack array",
        "{\"map\": [[key, value], ...]}": "MessagePack map, pairs in wire order (order matters for the bytes; decoders look keys up by name)",
    },
}

out = ROOT / "tests" / "vectors.json"
text = json.dumps({"schema": SCHEMA, "vectors": VECTORS}, indent=1) + "\n"
out.write_text(text)
print(f"wrote {len(VECTORS)} vectors to {out.relative_to(ROOT)}")
