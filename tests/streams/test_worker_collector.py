"""The worker's garbage-collector setting (the backtest's): the young generation collected every
BATCH_GC_THRESHOLD allocations (faust's per-event garbage dies young), older ones untouched."""

from __future__ import annotations

import gc

from orderwatch.backtest import BATCH_GC_THRESHOLD
from orderwatch.streams import worker


def test_the_worker_collects_its_young_generation_less_often_and_leaves_the_older_ones() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert worker.tune_collector() == (700, 10, 10)
        assert gc.get_threshold() == (BATCH_GC_THRESHOLD, 10, 10)
        assert gc.isenabled()
    finally:
        gc.set_threshold(*saved)
