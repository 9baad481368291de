"""Which send errors an outage explains (`retry_later`): what aiokafka raises while the broker is
gone or restarting, bare or wrapped by faust, and nothing a record itself causes."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    ProducerClosed,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from faust.exceptions import ProducerSendError

from orderwatch.streams.kafka_client import retry_later


def _wrapped(exc: BaseException) -> ProducerSendError:
    """As faust's aiokafka producer raises it (`raise ProducerSendError(...) from exc`)."""
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "exc",
    [
        UnknownTopicOrPartitionError(),  # a first send's metadata wait gave up
        KafkaTimeoutError(),  # a batch expired unsent, or no room in a full batch in time
        NodeNotReadyError(),
        KafkaConnectionError(),
        NotLeaderForPartitionError(),
    ],
)
def test_an_outage_s_errors_are_retried_bare_or_wrapped(exc: BaseException) -> None:
    assert retry_later(exc)
    assert retry_later(_wrapped(exc))


@pytest.mark.parametrize(
    "exc",
    [
        MessageSizeTooLargeError(),
        TopicAuthorizationFailedError(),
        ProducerClosed(),  # the stop closed the producer: nobody will send it
        ValueError("not a Kafka error"),
        ProducerSendError("no cause"),
    ],
)
def test_errors_of_the_record_or_the_stop_are_not(exc: BaseException) -> None:
    assert not retry_later(exc)
    assert not retry_later(_wrapped(exc))
