"""The one root exception of orderwatch and its family.

OrderwatchError
├── ConfigError        a setting or config file key is wrong (names the key and what it expects)
├── InvalidEvent       an input message broke the wire contract (goes to the dead-letter topic)
├── InputError         an input file cannot be read at all
└── HandlerError       the handlers (case store, actions, notifications) could not do something
    ├── CaseNotFound       no case with that exception id (ops API: 404)
    ├── TransitionError    a lifecycle move the case's status does not allow (ops API: 422)
    ├── StoreUnavailable   Redis cannot be reached; retryable, nothing was written
    └── DeliveryError      a webhook or command could not be delivered after its retries
"""

from __future__ import annotations

__all__ = [
    "CaseNotFound",
    "ConfigError",
    "DeliveryError",
    "HandlerError",
    "InputError",
    "InvalidEvent",
    "OrderwatchError",
    "StoreUnavailable",
    "TransitionError",
]


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


class HandlerError(OrderwatchError):
    """Root of what the handlers raise on purpose."""


class CaseNotFound(HandlerError, KeyError):
    """No case has this exception id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TransitionError(HandlerError):
    """The case's current status does not allow the requested move (e.g. resolved -> acknowledged)."""


class StoreUnavailable(HandlerError):
    """The case store (Redis) cannot be reached; the operation did not happen and may be retried."""


class DeliveryError(HandlerError):
    """A notification or command could not be delivered after all its retries."""
