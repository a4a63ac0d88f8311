"""The blocking client: one TCP (or TLS) connection to a broker, every
operation of PROTOCOL.md as a method, and the two role classes.

The client is single-threaded, like the programs it serves: a method sends
its request and reads replies until its own arrives. Replies are matched by
id (PROTOCOL.md 3.3), so the replies of other requests still in flight — the
``*_nowait`` publishes and pulls — are set on their :class:`Completion` as
they pass. That one mechanism gives plain calls, pipelined publishing and
several pulls in flight. Requests are written to a local buffer and sent in
one ``sendall`` when the client needs a reply (or the buffer grows), so a
pipeline of publishes costs few system calls.

Time: ``timeout`` (seconds) bounds every blocking call; a pull's own wait is
added to it. A call that times out closes the connection, since a late reply
could no longer be told apart safely.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import struct
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import protocol as p
from .errors import (
    ClientTimeout,
    ConnectionClosed,
    ConnectionFailed,
    CourierError,
    ProtocolError,
    from_reply,
)
from .protocol import (
    BatchResult,
    FetchResult,
    Group,
    Message,
    Messages,
    Payload,
    Position,
    PublishResult,
    Registration,
    TopicPage,
)

DEFAULT_ADDR = "localhost:5555"
DEFAULT_PORT = 5555
#: Seconds a blocking call waits for its reply (a pull: on top of its wait).
DEFAULT_TIMEOUT = 10.0
#: Seconds :meth:`Client.pull` waits for messages when none are ready.
DEFAULT_PULL_WAIT = 1.0
#: Most requests a pipeline keeps in flight before it reads replies.
DEFAULT_MAX_IN_FLIGHT = 4096
_SEND_BUFFER = 256 * 1024
_RECV_CHUNK = 256 * 1024


def parse_addr(addr: str) -> Tuple[str, int]:
    """``"host:port"``, ``"host"`` (port 5555) or ``"[v6]:port"``."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
    else:
        host, port = addr, ""
    if not host:
        raise ValueError(f"no host in address {addr!r}")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in address {addr!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad port in address {addr!r}")
    return host, number


class Completion:
    """The reply to one request in flight. :meth:`result` waits for it."""

    __slots__ = ("_client", "id", "op", "topic", "_done", "_value")

    def __init__(self, client: "Client", request_id: int, op: int, topic: Optional[str]):
        self._client = client
        self.id = request_id
        self.op = op
        self.topic = topic
        self._done = False
        self._value: Any = None

    def done(self) -> bool:
        """True once the reply (or the error that ends it) has arrived."""
        return self._done

    def _set(self, value: Any) -> None:
        self._done = True
        self._value = value

    def exception(self, timeout: Optional[float] = None) -> Optional[CourierError]:
        """Waits like :meth:`result` and returns the error, or ``None``."""
        self._client._wait_for(self, timeout)
        return self._value if isinstance(self._value, CourierError) else None

    def result(self, timeout: Optional[float] = None) -> Any:
        """Waits up to ``timeout`` seconds (default: the client's) for the
        reply; returns the operation's result or raises its error."""
        self._client._wait_for(self, timeout)
        if isinstance(self._value, CourierError):
            raise self._value
        return self._value

    def __repr__(self) -> str:
        state = repr(self._value) if self._done else "pending"
        return f"<Completion {p.OP_NAMES.get(self.op, self.op)} id={self.id} {state}>"


class Client:
    """One connection to a broker, handshake done.

    Args:
        addr: ``"host:port"``; default ``"localhost:5555"`` (the broker's
            own default address), and a bare ``"host"`` means port 5555.
        client_name: sent in HELLO, shown in the broker's logs.
        timeout: seconds every blocking call waits for its reply
            (default 10; ``None`` waits forever); a publish waits the
            broker's ``publish_hold_ms`` more, a pull its ``wait`` more. Each
            method also takes ``timeout=`` for that call alone.
        connect_timeout: seconds to open the connection (default: timeout).
        user, token: credentials sent in HELLO; default to the environment's
            ``COURIER_USER`` and ``COURIER_TOKEN``. Left out when not set.
        tls: connect over TLS (the standard ``ssl`` module), checking the
            broker's certificate against ``ca`` (a PEM file) or the system's
            roots. ``ssl_context`` replaces the default context altogether.
        server_hostname: the name to check the certificate against
            (default: the host of ``addr``).

    Raises :class:`~courier.ConnectionFailed` if the connection cannot be
    opened, and the broker's error (``AuthFailed``, ``UnsupportedVersion``,
    ...) if the handshake is refused. Not thread-safe: use one client per
    thread.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        client_name: str = "courier-python",
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        connect_timeout: Optional[float] = None,
        user: Optional[str] = None,
        token: Optional[str] = None,
        tls: bool = False,
        ca: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        server_hostname: Optional[str] = None,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        self._sock: Optional[socket.socket] = None
        self._rbuf = bytearray()
        self._scratch = bytearray(_RECV_CHUNK)
        self._scratch_view = memoryview(self._scratch)
        self._rpos = 0
        self._wbuf: List[bytes] = []
        self._wlen = 0
        self._next_id = 1
        self._pending: Dict[int, Completion] = {}
        self._closed_by: Optional[CourierError] = None
        self._kernel_timeouts: Dict[int, int] = {}
        self._max_frame = 16 * 1024 * 1024  # until HELLO says
        self._publish_hold = 0.0
        host, port = parse_addr(addr)
        user = user if user is not None else os.environ.get("COURIER_USER")
        token = token if token is not None else os.environ.get("COURIER_TOKEN")
        if (user is None) != (token is None):
            raise ValueError("give both user and token, or neither")
        credentials = None if user is None else {"user": user, "token": token or ""}
        try:
            sock = socket.create_connection(
                (host, port), timeout=connect_timeout if connect_timeout is not None else timeout
            )
        except OSError as e:
            raise ConnectionFailed(f"cannot connect to {addr}: {e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls or ssl_context is not None or ca is not None:
                context = ssl_context or ssl.create_default_context(cafile=ca)
                sock = context.wrap_socket(sock, server_hostname=server_hostname or host)
            sock.settimeout(None)  # blocking; see _kernel_timeout
        except OSError as e:  # ssl.SSLError included
            sock.close()
            raise ConnectionFailed(f"cannot set up the connection to {addr}: {e}") from e
        self._sock = sock
        try:
            info = self._call(p.HELLO, p.hello_args(client_name, credentials))
        except BaseException:
            self.close()
            raise
        #: The HELLO reply: the broker's version and limits (PROTOCOL.md 4.1).
        self.server_info: Dict[str, Any] = info
        self._max_frame = int(info.get("max_frame_bytes", p.DEFAULT_MAX_FRAME_BYTES))
        self._publish_hold = int(info.get("publish_hold_ms", 0)) / 1000
        #: Largest payload the broker takes.
        self.max_payload_bytes: int = int(info.get("max_payload_bytes", self._max_frame - 512))

    # ------------------------------------------------------------ plumbing

    def _submit(self, op: int, args: Sequence[Any], topic: Optional[str] = None) -> Completion:
        """Queues one request; the reply lands on the returned completion."""
        if self._sock is None:
            raise self._closed_by or ConnectionClosed("the client is closed")
        request_id = self._next_id
        self._next_id += 1
        frame = p.request(op, request_id, args)
        completion = Completion(self, request_id, op, topic)
        self._pending[request_id] = completion
        self._wbuf.append(frame)
        self._wlen += len(frame)
        if self._wlen >= _SEND_BUFFER:
            self.flush()
        return completion

    def flush(self) -> None:
        """Sends every queued request now."""
        if not self._wbuf or self._sock is None:
            return
        data = b"".join(self._wbuf)
        self._wbuf.clear()
        self._wlen = 0
        try:
            self._kernel_timeout(socket.SO_SNDTIMEO, self.timeout)
            self._sock.sendall(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            self._fail(ClientTimeout(f"sending to {self.addr} took over {self.timeout} s"))
        except OSError as e:
            self._fail(ConnectionClosed(f"write to {self.addr} failed: {e}"))

    def _kernel_timeout(self, option: int, seconds: Optional[float]) -> None:
        """Sets SO_RCVTIMEO or SO_SNDTIMEO, rounded up to 0.1 s, when it
        changes. Python's own socket timeouts would cost a poll() before
        every send and recv, and two fcntl()s whenever they change: on a
        loopback round trip of a few microseconds that is most of the cost.
        The socket stays blocking, a timeout surfaces as EAGAIN, and the
        caller checks its deadline."""
        tenths = 0 if seconds is None else max(1, math.ceil(seconds * 10))
        if self._kernel_timeouts.get(option) == tenths or self._sock is None:
            return
        value = struct.pack("ll", tenths // 10, (tenths % 10) * 100_000)
        self._sock.setsockopt(socket.SOL_SOCKET, option, value)
        self._kernel_timeouts[option] = tenths

    def _call(self, op: int, args: Sequence[Any], topic: Optional[str] = None,
              timeout: Optional[float] = None) -> Any:
        """Sends one request and waits ``timeout`` seconds (default: the
        client's) for its reply."""
        return self._submit(op, args, topic).result(timeout)

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        timeout = self.timeout if timeout is None else timeout
        return None if timeout is None else time.monotonic() + timeout

    def _wait_for(self, completion: Completion, timeout: Optional[float]) -> None:
        if timeout is None and completion.op in (p.PUBLISH, p.PUBLISH_BATCH) and self.timeout is not None:
            # A publish to a full topic is held up to publish_hold_ms before
            # the broker answers (PROTOCOL.md 4.5): the default wait covers
            # it, so that TopicFull arrives rather than a client timeout.
            timeout = self.timeout + self._publish_hold
        deadline = self._deadline(timeout)
        self.flush()
        while not completion._done:
            self._read_one(deadline)

    def _fail(self, error: CourierError) -> None:
        """Closes the connection and ends every request in flight with
        ``error``; raises it."""
        self._shutdown(error)
        raise error

    def _shutdown(self, error: CourierError) -> None:
        if self._closed_by is None:
            self._closed_by = error
        pending, self._pending = self._pending, {}
        for completion in pending.values():
            completion._set(error)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _read_one(self, deadline: Optional[float]) -> None:
        """Reads and dispatches one reply frame."""
        body = self._read_frame(deadline)
        value = p.unpack(body)
        rid, status, reply = p.split_reply(value)
        completion = self._pending.pop(rid, None)
        if status != 0:
            if not isinstance(reply, str):
                self._fail(ProtocolError(f"error reply without a message: {reply!r:.100}"))
            error = from_reply(status, reply)
            if completion is not None:
                completion._set(error)
            if error.closes:
                # The broker closes after it; nothing else will be answered.
                self._shutdown(error)
            return
        if completion is None:
            self._fail(ProtocolError(f"reply to unknown request id {rid}"))
            return
        try:
            result = p.decode_body(completion.op, reply)
        except ProtocolError as e:
            self._fail(e)
            return
        if completion.op == p.FETCH:
            result = result._replace(
                messages=[m._replace(topic=completion.topic or "") for m in result.messages]
            )
        completion._set(result)

    def _read_frame(self, deadline: Optional[float]) -> bytes:
        # Frames are consumed by advancing an offset; the buffer is compacted
        # only before the next read, so many small replies in one chunk cost
        # no copying of the rest.
        while True:
            buf, pos = self._rbuf, self._rpos
            if len(buf) - pos >= 4:
                length = int.from_bytes(buf[pos : pos + 4], "big")
                if length > self._max_frame:
                    self._fail(ProtocolError(f"reply frame of {length} bytes is over the limit"))
                end = pos + 4 + length
                if len(buf) >= end:
                    self._rpos = end
                    return bytes(buf[pos + 4 : end])
            if pos:
                del buf[:pos]
                self._rpos = 0
            self._recv(deadline)

    def _recv(self, deadline: Optional[float]) -> None:
        while True:
            sock = self._sock
            if sock is None:
                raise self._closed_by or ConnectionClosed("the client is closed")
            if deadline is None:
                self._kernel_timeout(socket.SO_RCVTIMEO, None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail(ClientTimeout(f"no reply from {self.addr} in time"))
                self._kernel_timeout(socket.SO_RCVTIMEO, remaining)
            try:
                # Into a buffer kept for the connection: recv() would allocate
                # (and for this size mmap, shrink and unmap) a bytes object
                # per call.
                n = sock.recv_into(self._scratch)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue  # the kernel's timeout passed: check the deadline
            except OSError as e:
                self._fail(ConnectionClosed(f"read from {self.addr} failed: {e}"))
                return
            if not n:
                self._fail(self._closed_by or ConnectionClosed(f"{self.addr} closed the connection"))
            self._rbuf += self._scratch_view[:n]
            return

    def close(self) -> None:
        """Closes the connection. Requests still in flight end with
        :class:`~courier.ConnectionClosed`. A subscriber session stays
        resumable for its timeout (use :meth:`end_session` to end it)."""
        if self._sock is not None:
            try:
                self.flush()
            except CourierError:
                pass
        self._shutdown(ConnectionClosed("the client was closed"))

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.addr} {'closed' if self.closed else 'open'}>"

    # ------------------------------------------------------------ any request

    def call(self, op: int, args: Sequence[Any], *, timeout: Optional[float] = None) -> Any:
        """Low level: sends ``[op, id, *args]`` as it is and returns the typed
        result for ``op`` (or raises its error). For experiments and tests;
        the methods below are the checked way to build each request."""
        completion = self._submit(op, list(args))
        return completion.result(timeout)

    def hello(self, client_name: str = "courier-python", *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """HELLO again. The handshake is done when the client connects, so
        the broker answers :class:`~courier.HandshakeRepeated`; here so that
        every operation has its method."""
        return self._call(p.HELLO, p.hello_args(client_name), timeout=timeout)

    # ------------------------------------------------------------ publishing

    def register_publisher(self, producer_id: Optional[str] = None, *, timeout: Optional[float] = None) -> int:
        """REGISTER_PUBLISHER: makes this connection a publisher; returns the
        publisher id. ``producer_id`` (a durable identity, 1 to 255 bytes)
        turns on deduplication by ``seq`` (ROUND4)."""
        return self._call(p.REGISTER_PUBLISHER, p.register_publisher_args(producer_id), timeout=timeout)

    def create_topic(
        self,
        topic: str,
        *,
        retain_ms: Optional[int] = None,
        retain_bytes: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """CREATE_TOPIC. ``retain_ms`` / ``retain_bytes`` (ROUND4) keep
        messages by age / size instead of until acknowledged (0: no bound)."""
        self._call(p.CREATE_TOPIC, p.create_topic_args(topic, retain_ms, retain_bytes), timeout=timeout)

    def delete_topic(self, topic: str, *, timeout: Optional[float] = None) -> None:
        """DELETE_TOPIC: drops the topic, its messages and subscriptions."""
        self._call(p.DELETE_TOPIC, p.topic_args(topic), timeout=timeout)

    def publish(
        self, topic: str, payload: Payload, *, seq: Optional[int] = None, timeout: Optional[float] = None
    ) -> PublishResult:
        """PUBLISH one message (``str`` is sent as UTF-8) and waits until it
        is stored; returns ``(offset, subscribers)``. ``seq`` (ROUND4, needs
        a ``producer_id``) makes a resend of the same message harmless."""
        return self._call(p.PUBLISH, p.publish_args(topic, payload, seq), timeout=timeout)

    def publish_batch(
        self,
        topic: str,
        payloads: Sequence[Payload],
        *,
        first_seq: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> BatchResult:
        """PUBLISH_BATCH: all or nothing; returns ``(first_offset, count,
        subscribers)``."""
        return self._call(p.PUBLISH_BATCH, p.publish_batch_args(topic, payloads, first_seq), timeout=timeout)

    def publish_nowait(self, topic: str, payload: Payload, *, seq: Optional[int] = None) -> Completion:
        """Queues a PUBLISH without waiting; its :class:`Completion` gives the
        :class:`PublishResult` (see also :meth:`pipeline`)."""
        return self._submit(p.PUBLISH, p.publish_args(topic, payload, seq))

    def publish_batch_nowait(
        self, topic: str, payloads: Sequence[Payload], *, first_seq: Optional[int] = None
    ) -> Completion:
        """Queues a PUBLISH_BATCH without waiting."""
        return self._submit(p.PUBLISH_BATCH, p.publish_batch_args(topic, payloads, first_seq))

    def pipeline(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> "Pipeline":
        """Many publishes in flight on this connection; see :class:`Pipeline`."""
        return Pipeline(self, max_in_flight)

    # ------------------------------------------------------------ subscribing

    def register_subscriber(
        self,
        subscriber_id: Optional[int] = None,
        *,
        timeout_ms: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Registration:
        """REGISTER_SUBSCRIBER: a new session (``subscriber_id=None``) or the
        resume of one; returns ``(subscriber_id, topics, more)``.
        ``timeout_ms`` asks how long a new session outlives its connection.
        On resume, what was delivered but not acknowledged comes again."""
        return self._call(p.REGISTER_SUBSCRIBER, p.register_subscriber_args(subscriber_id, timeout_ms), timeout=timeout)

    def resume(self, subscriber_id: int, *, timeout: Optional[float] = None) -> Registration:
        """Resumes session ``subscriber_id`` (REGISTER_SUBSCRIBER with it)."""
        return self.register_subscriber(subscriber_id, timeout=timeout)

    def subscribe(
        self, topic: str, position: Optional[Position] = None, *, timeout: Optional[float] = None
    ) -> int:
        """SUBSCRIBE; returns the offset of the first message this subscriber
        will get. ``position`` (ROUND4): ``"new"``, ``"earliest"``, an offset
        or ``{"time_ms": unix_ms}``; default: from now on."""
        return self._call(p.SUBSCRIBE, p.subscribe_args(topic, position), timeout=timeout)

    def unsubscribe(self, topic: str, *, timeout: Optional[float] = None) -> None:
        """UNSUBSCRIBE: ends the subscription."""
        self._call(p.UNSUBSCRIBE, p.topic_args(topic), timeout=timeout)

    def seek(self, topic: str, position: Position, *, timeout: Optional[float] = None) -> int:
        """SEEK (ROUND4): moves this subscription to ``position``; returns
        where it landed (out-of-range positions are clamped)."""
        return self._call(p.SEEK, p.seek_args(topic, position), timeout=timeout)

    def pull_groups(
        self,
        topic: Optional[str] = None,
        *,
        max_messages: int = p.MAX_PULL_MESSAGES,
        max_bytes: Optional[int] = None,
        wait: float = DEFAULT_PULL_WAIT,
        ack: bool = True,
        timeout: Optional[float] = None,
    ) -> List[Group]:
        """PULL, returning the reply's groups as they are (see :meth:`pull`)."""
        completion = self.pull_nowait(
            topic, max_messages=max_messages, max_bytes=max_bytes, wait=wait, ack=ack
        )
        timeout = self.timeout if timeout is None else timeout
        return completion.result(None if timeout is None else timeout + max(wait, 0.0))

    def pull(
        self,
        topic: Optional[str] = None,
        *,
        max_messages: int = p.MAX_PULL_MESSAGES,
        max_bytes: Optional[int] = None,
        wait: float = DEFAULT_PULL_WAIT,
        ack: bool = True,
        timeout: Optional[float] = None,
    ) -> Messages:
        """PULL: the new messages of ``topic`` (``None``: every subscribed
        topic), each with ``.payload`` (bytes), ``.topic`` and ``.offset``.

        When none are ready it waits up to ``wait`` seconds (default
        :data:`DEFAULT_PULL_WAIT`, 1 s; 0 answers at once) and returns an
        empty list if none came. With ``ack=True`` (the default) it first
        acknowledges everything already delivered on the pulled topics — the
        messages earlier pulls returned — so a loop of pulls consumes
        at-least-once; pass ``ack=False`` and call :meth:`ack` to decide
        yourself. ``max_bytes`` defaults to one frame's worth. ``timeout``
        (default: the client's) bounds the wait for the reply beyond ``wait``.
        """
        groups = self.pull_groups(
            topic, max_messages=max_messages, max_bytes=max_bytes, wait=wait, ack=ack,
            timeout=timeout,
        )
        out = Messages()
        for g in groups:
            out.extend(g.messages())
            if g.lost:
                out.lost[g.topic] = out.lost.get(g.topic, 0) + g.lost
        return out

    def pull_nowait(
        self,
        topic: Optional[str] = None,
        *,
        max_messages: int = p.MAX_PULL_MESSAGES,
        max_bytes: Optional[int] = None,
        wait: float = DEFAULT_PULL_WAIT,
        ack: bool = False,
    ) -> Completion:
        """Sends a PULL without waiting (several may be in flight, up to the
        broker's ``max_waiting_pulls``); the completion gives its list of
        :class:`Group`. Acknowledge with :meth:`ack` when processed."""
        wait_ms = min(max(int(wait * 1000), 0), p.MAX_PULL_WAIT_MS)
        max_bytes = self._reply_bytes(max_bytes)
        return self._submit(p.PULL, p.pull_args(topic, max_messages, max_bytes, wait_ms, ack), topic)

    def _reply_bytes(self, max_bytes: Optional[int]) -> int:
        """A PULL's or FETCH's ``max_bytes``: by default one frame's worth."""
        return min(self._max_frame, p.MAX_U32) if max_bytes is None else max_bytes

    def ack(self, topic: str, offset: int, *, timeout: Optional[float] = None) -> None:
        """ACK: acknowledges every message of ``topic`` below ``offset``."""
        self._call(p.ACK, p.ack_args(topic, offset), timeout=timeout)

    def messages(
        self,
        topic: Optional[str] = None,
        *,
        wait: float = DEFAULT_PULL_WAIT,
        max_messages: int = 1000,
        idle_timeout: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Message]:
        """Yields messages as they come, pulling and acknowledging as it goes.

        Each pull acknowledges the batch before it (``ack=True``), and when
        the iteration is stopped (``break``, ``close()``) the messages
        yielded so far are acknowledged too, so nothing handled comes again
        and nothing not yet handled is lost. Stops after ``idle_timeout``
        seconds with nothing (default: never). ``timeout`` bounds each
        pull's reply beyond its ``wait``, as in :meth:`pull`.
        """
        last: Dict[str, int] = {}
        idle_since = time.monotonic()
        try:
            while True:
                batch = self.pull(
                    topic, wait=wait, max_messages=max_messages, ack=True, timeout=timeout
                )
                last.clear()
                if not batch:
                    if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                        return
                    continue
                idle_since = time.monotonic()
                for message in batch:
                    last[message.topic] = message.offset + 1
                    yield message
        finally:
            if last and not self.closed:
                try:
                    for name, offset in last.items():
                        self.ack(name, offset, timeout=timeout)
                except CourierError:
                    pass

    def fetch(
        self,
        topic: str,
        offset: int,
        *,
        max_messages: int = 1000,
        max_bytes: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> FetchResult:
        """FETCH (ROUND4): reads retained messages from ``offset`` without a
        subscription; each message carries ``time_ms``."""
        max_bytes = self._reply_bytes(max_bytes)
        return self._call(p.FETCH, p.fetch_args(topic, offset, max_messages, max_bytes), topic, timeout=timeout)

    def end_session(self, *, timeout: Optional[float] = None) -> None:
        """END_SESSION: ends this connection's subscriber session now."""
        self._call(p.END_SESSION, [], timeout=timeout)

    # ------------------------------------------------------------ anyone

    def stats(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """STATS: the broker's counters (PROTOCOL.md 4.12)."""
        return self._call(p.STATS, [], timeout=timeout)

    def list_topics(
        self, after: Optional[str] = None, limit: int = 1000, *, timeout: Optional[float] = None
    ) -> TopicPage:
        """LIST_TOPICS: one page ``(topics, next)``; pass ``next`` as
        ``after`` for the next page."""
        return self._call(p.LIST_TOPICS, p.list_topics_args(after, limit), timeout=timeout)

    def iter_topics(self, *, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Every topic's map, following LIST_TOPICS pages to the end
        (``timeout`` bounds each page's reply)."""
        after: Optional[str] = None
        while True:
            page = self.list_topics(after, timeout=timeout)
            yield from page.topics
            if page.next is None:
                return
            after = page.next

    def topic_info(self, topic: str, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """TOPIC_INFO: the topic's map (name, next_offset, backlog, ...)."""
        return self._call(p.TOPIC_INFO, p.topic_args(topic), timeout=timeout)

    # ------------------------------------------------------------ the original tool's names

    def registerPublisher(self) -> int:
        """Alias of :meth:`register_publisher` (the original tool's name)."""
        return self.register_publisher()

    def createTopic(self, topic: str) -> None:
        """Alias of :meth:`create_topic`."""
        self.create_topic(topic)

    def deleteTopic(self, topic: str) -> None:
        """Alias of :meth:`delete_topic`."""
        self.delete_topic(topic)

    def send(self, topic: str, message: Payload) -> PublishResult:
        """Alias of :meth:`publish`: ``message`` is ``str`` (sent as UTF-8)
        or ``bytes``."""
        return self.publish(topic, message)

    def registerSubscriber(self) -> Registration:
        """Alias of :meth:`register_subscriber` (a new session;
        ``int(result)`` is its id)."""
        return self.register_subscriber()


class Pipeline:
    """Publishes in flight on one client, their completions collected.

    ``publish`` and ``publish_batch`` queue a request and return at once;
    when ``max_in_flight`` requests are unanswered the pipeline reads
    replies before it sends more, so memory and the broker's unread-reply
    queue stay bounded. :meth:`wait` returns every outcome in request order:
    a result, or the :class:`CourierError` of that request (not raised).
    As a context manager it waits on exit and raises the first error::

        with client.pipeline() as pipe:
            for i in range(10_000):
                pipe.publish("news", f"message {i}")
    """

    def __init__(self, client: Client, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.client = client
        self.max_in_flight = max_in_flight
        self.completions: List[Completion] = []
        self._unanswered = 0  # index of the oldest completion not known done

    def _room(self) -> None:
        while len(self.completions) - self._unanswered >= self.max_in_flight:
            oldest = self.completions[self._unanswered]
            if not oldest.done():
                self.client._wait_for(oldest, None)
            self._unanswered += 1

    def publish(self, topic: str, payload: Payload, *, seq: Optional[int] = None) -> Completion:
        self._room()
        c = self.client.publish_nowait(topic, payload, seq=seq)
        self.completions.append(c)
        return c

    def publish_batch(
        self, topic: str, payloads: Sequence[Payload], *, first_seq: Optional[int] = None
    ) -> Completion:
        self._room()
        c = self.client.publish_batch_nowait(topic, payloads, first_seq=first_seq)
        self.completions.append(c)
        return c

    def wait(self, timeout: Optional[float] = None) -> List[Union[PublishResult, BatchResult, CourierError]]:
        """Waits for every reply (``timeout`` seconds in all, default the
        client's) and returns the outcomes in order; forgets them."""
        deadline = self.client._deadline(timeout)
        out = []
        for c in self.completions:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            error = c.exception(remaining)
            out.append(error if error is not None else c._value)
        self.completions = []
        self._unanswered = 0
        return out

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            return
        for outcome in self.wait():
            if isinstance(outcome, CourierError):
                raise outcome


class Publisher(Client):
    """A :class:`Client` for the publisher role: it registers as a publisher
    when connecting (registering again is harmless), so ``createTopic``,
    ``send``, ``deleteTopic`` work at once.

    ``courier.Publisher()`` with no address connects to ``localhost:5555``,
    where a broker started without ``--addr`` listens. ``producer_id``
    names an idempotent producer (``publish(..., seq=n)``); the other
    keyword arguments (``timeout``, ``user``/``token``, ``tls``/``ca``, ...)
    are :class:`Client`'s."""

    def __init__(self, addr: str = DEFAULT_ADDR, *, producer_id: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(addr, **kwargs)
        try:
            #: The broker's publisher id for this connection.
            self.publisher_id: int = self.register_publisher(producer_id)
        except BaseException:
            self.close()
            raise


class Subscriber(Client):
    """A :class:`Client` for the subscriber role. With ``subscriber_id`` it
    resumes that session when connecting (what was delivered but not
    acknowledged comes again); otherwise a new session is made on the first
    ``subscribe``, ``pull`` or ``messages`` (or by ``registerSubscriber``).
    ``session_id`` is the session's id, for resuming it later.

    ``courier.Subscriber()`` with no address connects to ``localhost:5555``,
    where a broker started without ``--addr`` listens; the other keyword
    arguments (``timeout``, ``user``/``token``, ``tls``/``ca``, ...) are
    :class:`Client`'s."""

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        subscriber_id: Optional[int] = None,
        session_timeout_ms: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(addr, **kwargs)
        self._session_timeout_ms = session_timeout_ms
        self.session_id: Optional[int] = None
        #: The REGISTER_SUBSCRIBER reply of the session held.
        self.registration: Optional[Registration] = None
        if subscriber_id is not None:
            try:
                self.register_subscriber(subscriber_id)
            except BaseException:
                self.close()
                raise

    def register_subscriber(
        self,
        subscriber_id: Optional[int] = None,
        *,
        timeout_ms: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Registration:
        """:meth:`Client.register_subscriber`, remembering the session
        (``session_id``) so that later calls use it; ``timeout_ms`` defaults
        to the ``session_timeout_ms`` given when constructing."""
        if timeout_ms is None:
            timeout_ms = self._session_timeout_ms
        reg = super().register_subscriber(subscriber_id, timeout_ms=timeout_ms, timeout=timeout)
        self.registration = reg
        self.session_id = reg.subscriber_id
        return reg

    def _ensure(self) -> None:
        if self.session_id is None:
            self.register_subscriber()

    def subscribe(
        self, topic: str, position: Optional[Position] = None, *, timeout: Optional[float] = None
    ) -> int:
        """SUBSCRIBE (the original tool's ``subscribe(topic)``), making the
        session first if there is none; returns the first offset it will
        get. See :meth:`Client.subscribe` for ``position``."""
        self._ensure()
        return super().subscribe(topic, position, timeout=timeout)

    def pull_nowait(self, topic: Optional[str] = None, **kwargs: Any) -> Completion:
        """:meth:`Client.pull_nowait`, making the session first if there is
        none (so :meth:`pull` and :meth:`messages` do too)."""
        self._ensure()
        return super().pull_nowait(topic, **kwargs)

    def end_session(self, *, timeout: Optional[float] = None) -> None:
        """END_SESSION; the next ``subscribe`` or ``pull`` makes a new one."""
        super().end_session(timeout=timeout)
        self.session_id = None
        self.registration = None
