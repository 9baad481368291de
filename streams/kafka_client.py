"""aiokafka connection options from the settings, in a module of its own that imports nothing of
the runtime: every client of the project (publish, topics, the handlers, the blocklist follower,
the worker) builds its connection from here without importing what those modules import."""

from __future__ import annotations

from typing import Any

from orderwatch.streams.settings import Settings

__all__ = ["kafka_client_options"]


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
