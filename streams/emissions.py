"""Emission publishing: opened and resolved exceptions go to `order-exceptions` (and the metrics),
and a DUPLICATE_ORDER the customer agent opens goes to the order's inbox for the order to adopt."""

from __future__ import annotations

import json
import time
from typing import Any

from orderwatch.detectors.records import Emission, to_cloudevent
from orderwatch.schemas.control import Adoption, encode
from orderwatch.streams.forwarding import Forwarder
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.outputs import Outputs

__all__ = ["EmissionPublisher"]


class EmissionPublisher:
    """Publishes and waits for the broker's ack: the caller writes state only afterwards, so a
    crash can repeat an emission (same ids, consumers dedupe) but never lose one."""

    def __init__(self, outputs: Outputs, topic: str, metrics: Metrics, forwarder: Forwarder) -> None:
        self._outputs = outputs
        self.topic = topic
        self._metrics = metrics
        self._forwarder = forwarder

    async def publish(self, agent: str, emissions: list[Emission], arrival: float | None = None) -> None:
        """`arrival`: the largest record timestamp the emitting agent partition had read, the
        record timestamp of an adoption (it follows the order.created it concerns, and keeps its
        place among the inbox's other records; see streams.forwarding)."""
        now = time.time()
        pending: list[Any] = []
        metrics = self._metrics
        for em in emissions:
            rec = em.record
            if em.kind == "opened":
                metrics.opened.labels(rec.rule, rec.severity).inc()
                metrics.lag_seconds.labels("opened").observe(max(0.0, now - rec.event_time))
            elif em.kind == "resolved":
                metrics.resolved.labels(rec.rule, rec.severity).inc()
            adoption = self._forwarder.adoption(agent, em)
            if adoption is not None:
                topic, key = adoption
                message = Adoption(id=f"adopt:{rec.exception_id}", event_time=rec.event_time, exception=rec.to_dict())
                headers, value = encode(message)
                await self._forwarder.send(topic, key, value, timestamp=arrival, headers=headers)
            pending.append(
                await self._outputs.send(
                    self.topic,
                    rec.exception_id.encode(),
                    json.dumps(to_cloudevent(em), separators=(",", ":")).encode(),
                )
            )
        for fut in pending:
            await fut
