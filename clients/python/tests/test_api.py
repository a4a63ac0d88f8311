"""The API issue 14 promises, name by name, checked without a broker: the
three classes, the original tool's camelCase names on each, the default
address, one exception class per code, and a timeout on every blocking
call."""

from __future__ import annotations

import inspect

import pytest

import courier

CLASSES = (courier.Client, courier.Publisher, courier.Subscriber)
ORIGINAL = ("registerPublisher", "createTopic", "send", "deleteTopic",
            "registerSubscriber", "subscribe", "pull")


@pytest.mark.parametrize("cls", CLASSES)
def test_every_class_has_the_original_names_documented(cls):
    for name in ORIGINAL:
        method = getattr(cls, name)
        assert callable(method) and method.__doc__, f"{cls.__name__}.{name}"
    for name in ("create_topic", "delete_topic", "publish", "publish_batch", "register_publisher",
                 "register_subscriber", "unsubscribe", "seek", "pull_nowait", "ack", "messages",
                 "fetch", "end_session", "stats", "list_topics", "topic_info", "pipeline", "resume"):
        assert callable(getattr(cls, name)), f"{cls.__name__}.{name}"
    assert hasattr(cls, "__enter__") and hasattr(cls, "__exit__")


@pytest.mark.parametrize("cls", CLASSES)
def test_the_address_defaults_to_localhost_5555_and_says_so(cls):
    assert inspect.signature(cls).parameters["addr"].default == "localhost:5555"
    assert courier.DEFAULT_ADDR == "localhost:5555"
    assert courier.client.parse_addr("localhost") == ("localhost", 5555)
    assert "localhost:5555" in (cls.__doc__ or "")


def test_the_original_signatures():
    assert list(inspect.signature(courier.Client.createTopic).parameters) == ["self", "topic"]
    assert list(inspect.signature(courier.Client.deleteTopic).parameters) == ["self", "topic"]
    assert list(inspect.signature(courier.Client.send).parameters) == ["self", "topic", "message"]
    assert list(inspect.signature(courier.Client.registerPublisher).parameters) == ["self"]
    assert list(inspect.signature(courier.Client.registerSubscriber).parameters) == ["self"]
    pull = inspect.signature(courier.Client.pull).parameters
    assert pull["wait"].default == courier.DEFAULT_PULL_WAIT > 0  # waits briefly


def test_one_exception_class_per_code():
    names = {
        "UnknownTopic": 9, "TopicExists": 10, "TopicFull": 11, "ShuttingDown": 21,
        "StorageUnavailable": 27, "SequenceGap": 28, "DuplicateSequence": 29,
        "AuthFailed": 30, "Forbidden": 31, "DiskFull": 32,
    }
    for name, code in names.items():
        cls = getattr(courier, name)
        assert issubclass(cls, courier.CourierError) and cls.code == code
        assert isinstance(cls.retryable, bool)
    assert set(courier.errors.BY_CODE) == set(range(1, 33))
    for cls in (courier.ConnectionFailed, courier.ConnectionClosed, courier.ClientTimeout,
                courier.ProtocolError):
        assert issubclass(cls, courier.CourierError) and cls.code is None


BLOCKING = ("register_publisher", "create_topic", "delete_topic", "publish", "publish_batch",
            "register_subscriber", "resume", "subscribe", "unsubscribe", "seek", "pull",
            "pull_groups", "ack", "fetch", "end_session", "stats", "list_topics", "topic_info",
            "hello", "call", "messages", "iter_topics")


def test_every_blocking_call_takes_a_timeout():
    for name in BLOCKING:
        assert "timeout" in inspect.signature(getattr(courier.Client, name)).parameters, name
    assert "timeout" in inspect.signature(courier.Client).parameters
    assert "timeout" in inspect.signature(courier.Completion.result).parameters
    assert "timeout" in inspect.signature(courier.Pipeline.wait).parameters
