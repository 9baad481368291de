"""What the ops views ask of the worker they run in: is it ready, and where is an order's
detector state (`streams.console.deps.WorkerState`, implemented over the worker app and its
handlers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from aiokafka.partitioner import murmur2

from orderwatch.detectors.orders import OrderDetector
from orderwatch.streams.console.ops import OrderPlace

if TYPE_CHECKING:
    from orderwatch.streams.handling import HandlerRuntime
    from orderwatch.streams.host import Host

__all__ = ["WorkerProbe", "order_partition"]


def order_partition(order_id: str, partitions: int) -> int:
    """The partition of an order id on the order-keyed topics (Kafka's default murmur2, as every
    client uses; the same as the runtime's `send_forward`)."""
    return int((murmur2(order_id.encode()) & 0x7FFFFFFF) % partitions)


class WorkerProbe:
    """Readiness and order placement of one worker: the detector side (`host`) and its handlers."""

    def __init__(self, host: Host, rt: HandlerRuntime) -> None:
        self.host = host
        self.rt = rt

    async def readiness(self) -> tuple[list[str], int]:
        """(why this worker is not ready, partitions assigned): every readiness check in one place,
        so a new signal is one more `reasons.append`."""
        rt = self.rt
        reasons = []
        try:
            await rt.redis.ping()
        except Exception as exc:  # whatever the client raises, the answer is "not ready"
            reasons.append(f"redis: no answer to PING ({type(exc).__name__})")
        detector_reasons, assigned = self.host.readiness(detection=rt.detection)
        reasons += detector_reasons
        if not rt.started.is_set():
            reasons.append("handlers: not started yet")
        return reasons, assigned

    def locate(self, order_id: str) -> OrderPlace:
        host, settings = self.host, self.host.settings
        topic = settings.topic("orders")
        partition = order_partition(order_id, settings.partitions)
        owned = self.rt.detection and (topic, partition) in host.port.actives()
        if owned:
            runtime = host.agents["orders"].runtimes.get(partition)
            detector = None if runtime is None else cast(OrderDetector, runtime.detector).describe(order_id)
            return OrderPlace(order_id, topic, partition, True, detector)
        why = (
            "this worker runs no detector (--handlers-only)"
            if not self.rt.detection
            else f"partition {partition} of {topic} is owned by another worker"
        )
        return OrderPlace(order_id, topic, partition, False, None, why, self._owner_url(order_id))

    def _owner_url(self, order_id: str) -> str | None:
        try:
            topic = self.host.app.topic(self.host.settings.topic("orders"))
            url = self.host.app.router.external_topic_key_store(topic, order_id.encode())
        except Exception:  # no assignment yet, or a worker that did not advertise its web address
            return None
        return str(url)
