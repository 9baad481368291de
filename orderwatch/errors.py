"""The one root exception of orderwatch and its family.

OrderwatchError
├── ConfigError        a setting or config file key is wrong (names the key and what it expects)
├── InvalidEvent       an input message broke the wire contract (goes to the dead-letter topic)
└── InputError         an input file cannot be read at all
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "InvalidEvent", "OrderwatchError"]


class OrderwatchError(Exception):
    """Root of every error orderwatch raises on purpose."""


class ConfigError(OrderwatchError, ValueError):
    """A configuration value is missing or wrong; the message names the key and the expected value."""


class InputError(OrderwatchError):
    """An input file or stream cannot be opened or decoded as a whole."""


class InvalidEvent(OrderwatchError):
    """One message broke the wire contract. `reason` is a short, bounded code fit for a metric
    label (`not_json`, `not_cloudevent`, `unknown_type`, `invalid_data`); the message is for people
    and never contains field values (they may be personal data)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
