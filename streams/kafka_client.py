"""aiokafka connection options from the settings, and which send errors an outage explains, in a
module of its own that imports nothing of the runtime: every client of the project (publish,
topics, the handlers, the blocklist follower, the worker) uses it without importing what those
modules import."""

from __future__ import annotations

from typing import Any

from orderwatch.streams.settings import Settings

__all__ = ["kafka_client_options", "retry_later"]


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka connection options (SASL/SSL for a real cluster) from the settings."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    return opts


def retry_later(exc: BaseException) -> bool:
    """A send failed because the broker could not take the record yet (it is gone, restarting,
    or electing a leader), not because of the record: sent again later, it can succeed.

    aiokafka marks such errors `retriable`, but for `KafkaTimeoutError`: what a record gets whose
    batch expired unsent (after the producer's request timeout) or that waited that long for room
    in a full batch, both of which an outage longer than the timeout causes. faust wraps the
    error in its ProducerSendError (`raise ... from exc`): the cause is what decides."""
    from aiokafka.errors import KafkaError, KafkaTimeoutError

    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, KafkaError):
        seen = seen.__cause__
    return isinstance(seen, KafkaTimeoutError) or (isinstance(seen, KafkaError) and bool(seen.retriable))
