"""run_backtest tunes the cyclic collector for its run only (`batch_collector`): the caller's
thresholds are back afterwards, after a failure too, and the output does not depend on it."""

from __future__ import annotations

import gc
import io
import json
from collections.abc import Iterator

import pytest

from orderwatch.backtest import BATCH_GC_THRESHOLD, run_backtest
from orderwatch.errors import InputError
from tests.factories import at, created, paid, raw


def _lines() -> list[bytes]:
    evs = [
        raw("order.created", "o-1", at(0), {}),  # invalid data: dead-lettered, not fatal
    ]
    good = [created("o-2", at(0)), paid("o-2", at(1))]
    return [json.dumps(e).encode() + b"\n" for e in evs] + [ev.model_dump_json().encode() + b"\n" for ev in good]


def test_the_thresholds_are_the_callers_again_after_a_run() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    run_backtest(iter(_lines()), output=io.StringIO(), sink=lambda _: seen.append(gc.get_threshold()))
    assert gc.get_threshold() == before
    assert seen and all(t[0] == BATCH_GC_THRESHOLD for t in seen)


def test_the_thresholds_are_restored_when_the_input_fails() -> None:
    before = gc.get_threshold()

    def broken() -> Iterator[bytes]:
        yield from _lines()
        raise InputError("cannot read input: truncated")

    with pytest.raises(InputError):
        run_backtest(broken(), output=io.StringIO())
    assert gc.get_threshold() == before


def test_the_output_is_the_same_with_the_default_collector() -> None:
    lines = _lines()  # built once: the factories number their event ids
    tuned, default = io.StringIO(), io.StringIO()
    run_backtest(iter(lines), output=tuned, until=at(days=30).timestamp())
    assert gc.get_threshold()[0] != BATCH_GC_THRESHOLD
    # The function under the decorator: the caller's (CPython's default) collector setting.
    run_backtest.__wrapped__(iter(lines), output=default, until=at(days=30).timestamp())  # type: ignore[attr-defined]
    assert tuned.getvalue() == default.getvalue()
    assert tuned.getvalue()  # something was detected: the comparison means something
