"""What the handlers and the ops API need from the worker app they are installed in
(`streams.app.Orderwatch`), as protocols: they read it through these and never import the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import faust

    from orderwatch.streams.metrics import Metrics
    from orderwatch.streams.settings import Settings

__all__ = ["AgentParts", "Consumer", "DetectorPartition", "EventClock", "Host", "TimedDetector"]


class TimedDetector(Protocol):
    def notify_at(self) -> float | None:
        """Event time of the detector's earliest deadline (None: none): the detector contract's
        `notify_at` (detectors.base)."""


class DetectorPartition(Protocol):
    """One partition of a detector agent: its detector and what it still buffers."""

    @property
    def detector(self) -> TimedDetector: ...

    @property
    def oldest(self) -> float:
        """Event time of the oldest buffered event (inf when none)."""


class AgentParts(Protocol):
    @property
    def runtimes(self) -> Mapping[int, DetectorPartition]:
        """Partition -> its runtime, for the partitions this worker owns now."""


class EventClock(Protocol):
    @property
    def max_event_time(self) -> float:
        """The largest event time seen on the inputs (-inf before any)."""


class Consumer(Protocol):
    """The worker's consumer, as `streams.consumer_port.ConsumerPort` answers for it (the one
    module that reads faust's private consumer state)."""

    def actives(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition)s this worker actively owns (empty before the first assignment)."""

    def committed(self, tp: tuple[str, int]) -> int | None:
        """The committed offset faust sought to for `tp`, None when it knows of none."""


class Host(Protocol):
    """The worker app: the faust app, its settings and metrics, its consumer (`port`), the
    detector agents and their event clock, and its own readiness (blocklist loaded, partitions
    assigned)."""

    @property
    def app(self) -> faust.App: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def port(self) -> Consumer: ...

    @property
    def clock(self) -> EventClock: ...

    @property
    def agents(self) -> Mapping[str, AgentParts]: ...

    def readiness(self, *, detection: bool = True) -> tuple[list[str], int]:
        """(why the detector side is not ready, partitions assigned)."""
