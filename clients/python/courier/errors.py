"""Exceptions: one class per error code of PROTOCOL.md section 5, plus the
client's own connection-level errors.

Every exception the package raises derives from :class:`CourierError`, so one
``except courier.CourierError`` catches them all; callers act on the class (or
on ``.code``), never on the message text, which the broker may change.
``.retryable`` says whether the same request may succeed later unchanged
(the "retry" column of PROTOCOL.md section 5); ``.closes`` whether the broker
closes the connection after sending it.

The classes are generated from one table so that a code, its name, its class
and its flags cannot disagree.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Type


class CourierError(Exception):
    """Base of every exception raised by this package.

    Attributes:
        code: the protocol error code, or ``None`` for an error the client
            itself detected (connection lost, timeout, bad reply).
        name: the code's SCREAMING_CASE name from PROTOCOL.md, or the class
            name for client-side errors.
        message: the text the broker sent (for people, not for matching).
        retryable: ``True`` if the same request may succeed later unchanged.
        closes: ``True`` if the connection is gone after this error.
    """

    code: Optional[int] = None
    name: str = "COURIER_ERROR"
    retryable: bool = False
    closes: bool = False

    def __init__(self, message: str = "", *, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.code is not None:
            return f"{self.name} ({self.code}): {self.message}"
        return self.message or self.name

    def __reduce__(self):  # keeps pickling (e.g. across processes) working
        return (_rebuild, (type(self).__name__, self.message, self.code))


def _rebuild(class_name: str, message: str, code: Optional[int]) -> "CourierError":
    cls = globals().get(class_name, CourierError)
    if cls is CourierError:
        return CourierError(message, code=code)
    return cls(message)


# (code, NAME, closes, retryable, doc) — PROTOCOL.md section 5, then the codes
# ROUND4 adds (28-32).
_CODES: Tuple[Tuple[int, str, bool, bool, str], ...] = (
    (1, "MALFORMED_REQUEST", False, False, "The request is not of its operation's shape."),
    (2, "UNKNOWN_OPERATION", False, False, "The operation code is not one the broker knows."),
    (3, "FRAME_TOO_LARGE", True, False, "A frame's length prefix is above max_frame_bytes."),
    (4, "UNSUPPORTED_VERSION", True, False, "HELLO asked for a version other than 2."),
    (5, "HANDSHAKE_REQUIRED", True, False, "The first frame was not a well-formed HELLO."),
    (6, "HANDSHAKE_REPEATED", False, False, "A well-formed HELLO after the handshake."),
    (7, "NOT_REGISTERED", False, False, "No publisher / subscriber registered on this connection."),
    (8, "INVALID_TOPIC_NAME", False, False, "The topic name breaks PROTOCOL.md section 6."),
    (9, "UNKNOWN_TOPIC", False, False, "No topic by that name."),
    (10, "TOPIC_EXISTS", False, False, "CREATE_TOPIC of an existing name."),
    (11, "TOPIC_FULL", False, True, "The topic's backlog stayed full for the publish hold; nothing stored."),
    (12, "TOPIC_DELETED", False, False, "The topic was deleted while the pull or publish waited."),
    (13, "NOT_SUBSCRIBED", False, False, "Not subscribed to that topic."),
    (14, "UNKNOWN_SUBSCRIBER", False, False, "No such subscriber session (never existed or expired)."),
    (15, "PAYLOAD_TOO_LARGE", False, False, "Payload over max_payload_bytes."),
    (16, "INVALID_ACK", False, False, "ACK beyond what was delivered."),
    (17, "TOO_MANY_TOPICS", False, True, "--max-topics reached."),
    (18, "TOO_MANY_CONNECTIONS", True, True, "--max-connections reached."),
    (19, "SESSION_TAKEN_OVER", False, False, "Another connection resumed this subscriber session."),
    (20, "TIMEOUT", True, False, "The handshake, or a partly sent frame, took too long (broker side)."),
    (21, "SHUTTING_DOWN", True, True, "The broker is stopping."),
    (22, "TOO_MANY_SUBSCRIBERS", False, True, "--max-subscribers-per-topic reached."),
    (23, "BROKER_FULL", False, True, "The broker's memory budget has no room; nothing stored."),
    (24, "BATCH_TOO_LARGE", False, False, "A batch larger than a topic may ever retain: split it."),
    (25, "TOO_MANY_SESSIONS", False, True, "--max-sessions reached."),
    (26, "TOO_MANY_SUBSCRIPTIONS", False, True, "--max-subscriptions-per-session reached."),
    (27, "STORAGE_UNAVAILABLE", False, True, "The broker's log could not write the request; nothing kept."),
    (28, "SEQUENCE_GAP", False, False, "A producer's seq beyond last stored + 1; nothing stored."),
    (29, "DUPLICATE_SEQUENCE", False, False, "The seq was stored long ago: the message IS stored; treat as done."),
    (30, "AUTH_FAILED", True, False, "Missing or wrong credentials."),
    (31, "FORBIDDEN", False, False, "The user may not do this operation on this topic."),
    (32, "DISK_FULL", False, True, "--max-disk reached (after the publish hold); nothing stored."),
)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


#: Error class by protocol code.
BY_CODE: Dict[int, Type[CourierError]] = {}

for _code, _name, _closes, _retry, _doc in _CODES:
    _cls = type(
        _camel(_name),
        (CourierError,),
        {
            "code": _code,
            "name": _name,
            "closes": _closes,
            "retryable": _retry,
            "__doc__": f"Error code {_code}, {_name}: {_doc}",
            "__module__": __name__,
        },
    )
    globals()[_cls.__name__] = _cls
    BY_CODE[_code] = _cls

# Names for type checkers and readers (the classes are made above).
MalformedRequest: Type[CourierError] = BY_CODE[1]
UnknownOperation: Type[CourierError] = BY_CODE[2]
FrameTooLarge: Type[CourierError] = BY_CODE[3]
UnsupportedVersion: Type[CourierError] = BY_CODE[4]
HandshakeRequired: Type[CourierError] = BY_CODE[5]
HandshakeRepeated: Type[CourierError] = BY_CODE[6]
NotRegistered: Type[CourierError] = BY_CODE[7]
InvalidTopicName: Type[CourierError] = BY_CODE[8]
UnknownTopic: Type[CourierError] = BY_CODE[9]
TopicExists: Type[CourierError] = BY_CODE[10]
TopicFull: Type[CourierError] = BY_CODE[11]
TopicDeleted: Type[CourierError] = BY_CODE[12]
NotSubscribed: Type[CourierError] = BY_CODE[13]
UnknownSubscriber: Type[CourierError] = BY_CODE[14]
PayloadTooLarge: Type[CourierError] = BY_CODE[15]
InvalidAck: Type[CourierError] = BY_CODE[16]
TooManyTopics: Type[CourierError] = BY_CODE[17]
TooManyConnections: Type[CourierError] = BY_CODE[18]
SessionTakenOver: Type[CourierError] = BY_CODE[19]
Timeout: Type[CourierError] = BY_CODE[20]
ShuttingDown: Type[CourierError] = BY_CODE[21]
TooManySubscribers: Type[CourierError] = BY_CODE[22]
BrokerFull: Type[CourierError] = BY_CODE[23]
BatchTooLarge: Type[CourierError] = BY_CODE[24]
TooManySessions: Type[CourierError] = BY_CODE[25]
TooManySubscriptions: Type[CourierError] = BY_CODE[26]
StorageUnavailable: Type[CourierError] = BY_CODE[27]
SequenceGap: Type[CourierError] = BY_CODE[28]
DuplicateSequence: Type[CourierError] = BY_CODE[29]
AuthFailed: Type[CourierError] = BY_CODE[30]
Forbidden: Type[CourierError] = BY_CODE[31]
DiskFull: Type[CourierError] = BY_CODE[32]


def from_reply(code: int, message: str) -> CourierError:
    """The exception for an error reply; a code this client does not know
    yet (a newer broker) gives a plain :class:`CourierError` carrying it."""
    cls = BY_CODE.get(code)
    if cls is None:
        return CourierError(message, code=code)
    return cls(message)


# Errors the client detects itself: no protocol code.


class ConnectionFailed(CourierError, ConnectionError):
    """The TCP (or TLS) connection could not be opened. Retryable."""

    name = "CONNECTION_FAILED"
    retryable = True
    closes = True


class ConnectionClosed(CourierError, ConnectionError):
    """The connection ended (the broker closed it, or a read or write failed);
    requests in flight have an unknown outcome. Retryable on a new client."""

    name = "CONNECTION_CLOSED"
    retryable = True
    closes = True


class ClientTimeout(CourierError, TimeoutError):
    """A blocking call got no reply within its timeout. The connection is
    closed, since a late reply could no longer be matched safely."""

    name = "CLIENT_TIMEOUT"
    retryable = True
    closes = True


class ProtocolError(CourierError):
    """The broker sent bytes this client cannot read as a reply: the
    connection is closed."""

    name = "PROTOCOL_ERROR"
    closes = True


__all__ = [
    "BY_CODE",
    "CourierError",
    "ConnectionFailed",
    "ConnectionClosed",
    "ClientTimeout",
    "ProtocolError",
    "from_reply",
] + [_camel(n) for _, n, _, _, _ in _CODES]
