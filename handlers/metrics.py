"""What the handlers count, as an interface: the few calls the case service, the action
dispatcher and the notifier make. `orderwatch.streams.metrics.Metrics` implements it with
Prometheus; `NO_METRICS` counts nothing, so the handlers run (and are tested) without it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_METRICS", "HandlerMetrics", "NoMetrics"]


class HandlerMetrics(Protocol):
    """The handlers' counters. Every argument is a bounded set (an operation, a level, a
    severity, a rule, an action code, a channel name, an outcome), never an id."""

    def store_retried(self, operation: str) -> None:
        """A case-store call failed and is tried again."""

    def store_outage(self, seconds: float) -> None:
        """The case store answered again after `seconds` without it."""

    def escalated(self, level: int, severity: str) -> None:
        """A case went up to `level`."""

    def case_changed(self, kind: str, severity: str) -> None:
        """A case changed (opened, resolved, escalated, ...)."""

    def incident_opened(self, rule: str) -> None:
        """Cases of one rule were grouped into a new incident."""

    def action_outcome(self, action: str, outcome: str) -> None:
        """What became of a recommended action (sent, pending_approval, failed, ...)."""

    def breaker_changed(self, channel: str, level: int) -> None:
        """A webhook channel's circuit breaker: 0 closed, 1 half open, 2 open."""

    def notified(self, channel: str, outcome: str, n: int) -> None:
        """`n` notifications of one channel ended with `outcome`."""


class NoMetrics:
    """Counts nothing: the default of every handler part built without metrics."""

    def store_retried(self, operation: str) -> None:
        pass

    def store_outage(self, seconds: float) -> None:
        pass

    def escalated(self, level: int, severity: str) -> None:
        pass

    def case_changed(self, kind: str, severity: str) -> None:
        pass

    def incident_opened(self, rule: str) -> None:
        pass

    def action_outcome(self, action: str, outcome: str) -> None:
        pass

    def breaker_changed(self, channel: str, level: int) -> None:
        pass

    def notified(self, channel: str, outcome: str, n: int) -> None:
        pass


NO_METRICS: HandlerMetrics = NoMetrics()
