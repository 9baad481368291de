"""`orderwatch backtest`: replay a JSON Lines file of CloudEvents through the rules in event time,
exactly as a `--clock event` worker would, and write the exception events it produces.
"""

from __future__ import annotations

import base64
import gc
import gzip
import json
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import Emission, to_cloudevent
from orderwatch.detectors.replay import EventTimeReplay
from orderwatch.detectors.skew import DEFAULT_MAX_SKEW, JUMP_REFUSED
from orderwatch.errors import InputError, InvalidEvent
from orderwatch.schemas.events import TOPIC_OF_TYPE, parse_event

__all__ = [
    "BATCH_GC_THRESHOLD",
    "DEFAULT_MAX_FUTURE",
    "BacktestResult",
    "batch_collector",
    "load_blocklist",
    "open_lines",
    "original_bytes",
    "run_backtest",
    "score",
    "tune_collector",
]

DEFAULT_MAX_FUTURE = 900.0
"""Seconds an event time may be ahead of the wall clock (`from_future` past it), live and here."""


@dataclass
class BacktestResult:
    lines: int = 0
    events: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late: int = 0
    opened: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)
    updated: int = 0
    pending: dict[str, int] = field(default_factory=dict)
    open_at_end: int = 0
    seconds: float = 0.0
    emissions: list[Emission] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


def open_lines(path: str | Path) -> Iterator[bytes]:
    """Lines of a JSON Lines file (`.gz` transparently; `-` is standard input)."""
    try:
        if str(path) == "-":
            yield from sys.stdin.buffer
            return
        opener: Any = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as fh:
            yield from fh
    except (OSError, EOFError, zlib.error) as exc:
        # A truncated or corrupt .gz surfaces mid-read: say so instead of a traceback.
        msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        raise InputError(msg) from exc


def load_blocklist(path: str | Path) -> Blocklist:
    """Blocklist entries as JSON Lines, one topic record each: `{"key": "customer:<id>" or
    "address:<fingerprint>", "value": {"reason": ..., "added_at": ...} or null}`."""
    from datetime import datetime

    bl = Blocklist()
    for n, raw in enumerate(open_lines(path), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            key, value = rec["key"], rec.get("value")
            if not isinstance(key, str) or not key.startswith(("customer:", "address:")):
                raise ValueError("key must start with customer: or address:")
            added = value.get("added_at") if isinstance(value, dict) else None
            added_at = datetime.fromisoformat(added).timestamp() if added else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"{path}:{n}: not a blocklist record ({exc})"
            raise InputError(msg) from exc
        bl.apply(key, value, added_at)
    return bl


BATCH_GC_THRESHOLD = 20_000
"""Allocations between young collections while `run_backtest` runs (CPython's default: 700)."""


def tune_collector() -> tuple[int, int, int]:
    """The cyclic collector's young generation every BATCH_GC_THRESHOLD allocations, as a replay
    wants it (`batch_collector`; a `--clock event` or live worker for its whole run); returns the
    threshold before."""
    before = gc.get_threshold()
    gc.set_threshold(BATCH_GC_THRESHOLD, *before[1:])
    return before


@contextmanager
def batch_collector() -> Iterator[None]:
    """The cyclic garbage collector tuned for a replay, then put back as it was. A replay
    allocates a few container objects per line that die within the lateness (parsed events, heap
    entries), and the collector's default first generation (700 allocations) collects so often
    that many of them are still alive, get promoted and are scanned again in the older
    generations, which also hold every open order's state. A larger first generation lets them
    die young. Nothing in the output depends on it (no finaliser, no weak reference)."""
    before = tune_collector()
    try:
        yield
    finally:
        gc.set_threshold(*before)


@batch_collector()
def run_backtest(
    lines: Iterator[bytes],
    *,
    config: RulesConfig | None = None,
    blocklist: Blocklist | None = None,
    lateness: float = 60.0,
    until: float | None = None,
    output: IO[str] | None = None,
    dead_letter: IO[str] | None = None,
    keep: bool = False,
    progress: Any = None,
    max_skew: float | None = DEFAULT_MAX_SKEW,
    max_future: float | None = DEFAULT_MAX_FUTURE,
    wall: float | None = None,
    sink: Callable[[list[Emission]], None] | None = None,
) -> BacktestResult:
    """Replay `lines`; write exception CloudEvents to `output` and bad lines to `dead_letter`.
    `keep` also returns the emissions in the result (tests, scoring). `max_skew` (None: off) is
    how far an event may run ahead of its topic's progress unconfirmed (docs/rules.md);
    `max_future` (None: off) how far ahead of `wall` (default: now) an event time may be.
    `sink` is handed each batch of emissions as it happens (calibrate measures from them)."""
    engine = Engine(config, blocklist)
    replay = EventTimeReplay(engine, lateness=lateness, source_of=_topic_of, max_skew=max_skew)
    future_limit = float("inf") if max_future is None else (time.time() if wall is None else wall) + max_future
    res = BacktestResult()
    started = time.perf_counter()

    def emit(emissions: list[Emission]) -> None:
        for em in emissions:
            if em.kind == "opened":
                res.opened[em.record.rule] += 1
            elif em.kind == "resolved":
                res.resolved[em.record.rule] += 1
            else:
                res.updated += 1
            if output is not None:
                output.write(json.dumps(to_cloudevent(em), separators=(",", ":")) + "\n")
        if keep:
            res.emissions.extend(emissions)
        if sink is not None:
            sink(emissions)

    def reject(n: int, raw: bytes, exc: InvalidEvent) -> None:
        res.invalid[exc.reason] += 1
        if dead_letter is not None:
            record = {"line": n, "reason": exc.reason, "error": exc.detail, **original_bytes(raw.removesuffix(b"\n"))}
            dead_letter.write(json.dumps(record) + "\n")

    for n, raw in enumerate(lines, 1):
        res.lines = n
        if progress is not None and n % 100_000 == 0:
            progress(n, time.perf_counter() - started)
        if not raw.strip():
            continue
        try:
            ev = parse_event(raw)
            t = ev.time.timestamp()
            if t > future_limit:
                msg = f"event time is more than {max_future:g} s ahead of the wall clock"
                raise InvalidEvent("from_future", msg)
            emissions = replay.push(ev, (n, raw), t)
        except InvalidEvent as exc:
            reject(n, raw, exc)
            continue
        res.events += 1
        if emissions:
            emit(emissions)
        if replay.refused:
            for _, (line, line_raw) in replay.refused:
                res.events -= 1
                reject(line, line_raw, InvalidEvent("from_future", JUMP_REFUSED))
            replay.refused.clear()
    emit(replay.finish(until))
    res.seconds = time.perf_counter() - started
    res.duplicates, res.late = replay.duplicates, replay.late
    res.pending = engine.pending()
    res.open_at_end = engine.stats()["open_exceptions"]
    return res


def _topic_of(ev: Any) -> str:
    return TOPIC_OF_TYPE[ev.type]


def original_bytes(raw: bytes) -> dict[str, str]:
    """A dead letter's copy of the message, lossless: its text when it is UTF-8, else base64."""
    try:
        return {"original": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"original_base64": base64.b64encode(raw).decode("ascii")}


def score(emissions: list[Emission], labels: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """Per rule: (true positives, false positives, false negatives), matching opened exceptions to
    labels on (rule, subject)."""
    predicted = {(em.record.rule, em.record.subject) for em in emissions if em.kind == "opened"}
    expected = {(lab["rule"], lab["subject"]) for lab in labels}
    rules = sorted({r for r, _ in predicted | expected})
    out = {}
    for rule in rules:
        p = {x for x in predicted if x[0] == rule}
        e = {x for x in expected if x[0] == rule}
        out[rule] = (len(p & e), len(p - e), len(e - p))
    return out
