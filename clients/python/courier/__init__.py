"""Courier: a Python client for the Courier publish/subscribe broker.

Quick start::

    import courier

    with courier.Publisher("localhost:5555") as pub:
        pub.createTopic("news")
        pub.send("news", "Hello")

    with courier.Subscriber("localhost:5555") as sub:
        sub.subscribe("news")
        for message in sub.pull("news"):
            print(message.offset, message.payload)

:class:`Client` speaks every operation of PROTOCOL.md (snake_case methods);
:class:`Publisher` and :class:`Subscriber` are the two roles, and all three
carry the original tool's names (``registerPublisher``, ``createTopic``,
``send``, ``deleteTopic``, ``registerSubscriber``, ``subscribe``, ``pull``).
Errors are classes named after the protocol's codes (``UnknownTopic``,
``TopicFull``, ...), all derived from :class:`CourierError`.

Layout: ``protocol`` (bytes and values, no I/O), ``errors`` (the exception
classes), ``client`` (the connection and the operations), ``bench`` (the
throughput and latency bench, ``python -m courier.bench``).
"""

from .client import (
    DEFAULT_ADDR,
    DEFAULT_PULL_WAIT,
    DEFAULT_TIMEOUT,
    Client,
    Completion,
    Pipeline,
    Publisher,
    Subscriber,
)
from .errors import *  # noqa: F401,F403 - one class per error code
from .errors import __all__ as _error_names
from .protocol import (
    PROTOCOL_VERSION,
    BatchResult,
    FetchResult,
    Group,
    Message,
    Messages,
    PublishResult,
    Registration,
    TopicPage,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Publisher",
    "Subscriber",
    "Pipeline",
    "Completion",
    "Message",
    "Messages",
    "Group",
    "PublishResult",
    "BatchResult",
    "Registration",
    "TopicPage",
    "FetchResult",
    "DEFAULT_ADDR",
    "DEFAULT_PULL_WAIT",
    "DEFAULT_TIMEOUT",
    "PROTOCOL_VERSION",
] + list(_error_names)
