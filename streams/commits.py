"""Last offset commit per input partition, for `orderwatch_last_commit_timestamp_seconds`: a faust
sensor, apart from streams.metrics so that the handlers (which use Metrics) import no faust."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import faust

from orderwatch.streams.consumer_port import committed_offsets
from orderwatch.streams.metrics import Metrics

__all__ = ["CommitSensor"]


class CommitSensor(faust.Sensor):
    """Sets `orderwatch_last_commit_timestamp_seconds` for every partition of `topics` whose
    committed offset a commit moved: faust's sensor hooks around each commit see the consumer's
    committed offsets before and after."""

    def __init__(self, metrics: Metrics, topics: Iterable[str]) -> None:
        super().__init__()
        self.metrics = metrics
        self.topics = frozenset(topics)

    def _offsets(self, consumer: Any) -> dict[tuple[str, int], Any]:
        return committed_offsets(consumer, self.topics)

    def on_commit_initiated(self, consumer: Any) -> Any:
        return self._offsets(consumer)

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        before = state if isinstance(state, dict) else {}
        now = time.time()
        for tp, off in self._offsets(consumer).items():
            if tp not in before or before[tp] != off:
                self.metrics.last_commit.labels(tp[0], str(tp[1])).set(now)
