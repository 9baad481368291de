"""The ceiling of any faust agent on this machine: one agent over the four input topics that only
decodes each message's JSON and acks it, no state, no sends. `bench_runtime.py` runs it as a
child process on the topics it published and reads the rate it logs.

    BARE_TOPICS=a,b BARE_GROUP=g BARE_TOTAL=n BARE_BOOTSTRAP=host:port python bench/faust_bare.py worker -l info

It logs `faust bare agent: <events> events, <events/s> events/s` once it has seen BARE_TOTAL
events (timed from the first one), then `faust bare totals: {json}` (seconds since the process
started and its CPU seconds, start-up included), then exits.
"""

from __future__ import annotations

import time

STARTED = time.time()

import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import faust  # noqa: E402

log = logging.getLogger("bench.faust_bare")

# The worker's collector setting (orderwatch.backtest.BATCH_GC_THRESHOLD; not imported, so
# the ceiling loads nothing of orderwatch): the same runtime tuning on every side of a comparison.
gc.set_threshold(20_000, *gc.get_threshold()[1:])

app = faust.App(
    os.environ.get("BARE_GROUP", "faust-bare"),
    broker=f"kafka://{os.environ.get('BARE_BOOTSTRAP', 'localhost:9092')}",
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    stream_wait_empty=False,
)
topic = app.topic(*os.environ.get("BARE_TOPICS", "orders").split(","), key_type=bytes, value_type=bytes)
TOTAL = int(os.environ.get("BARE_TOTAL", "1"))


@app.agent(topic)
async def bare(stream: Any) -> None:
    # Acked by hand, as the runtime does (it acks in offset order once applied).
    manual = stream.noack()
    seen, started = 0, 0.0
    async for event in manual.events():
        if not seen:
            started = time.perf_counter()
        with contextlib.suppress(ValueError):  # the simulated stream has a few bad lines on purpose
            json.loads(event.message.value)
        await manual.ack(event)
        seen += 1
        if seen >= TOTAL:
            rate = (seen - 1) / (time.perf_counter() - started)
            log.warning("faust bare agent: %s events, %.0f events/s", seen, rate)
            totals = {"events": seen, "seconds_from_start": time.time() - STARTED, "cpu_seconds": time.process_time()}
            log.warning("faust bare totals: %s", json.dumps(totals))
            logging.shutdown()
            os._exit(0)  # nothing to shut down cleanly: no state, no commits that matter


if __name__ == "__main__":
    app.main()
