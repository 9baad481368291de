"""Stored state survives a change of code: snapshots written by the previous format restore into
the current detectors and the run goes on to the same exceptions (tests/fixtures/snapshots_v0,
written by its make_fixture.py with the code before snapshots were versioned)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from orderwatch.backtest import load_blocklist
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import to_cloudevent
from orderwatch.schemas.events import parse_event

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "snapshots_v0"


def _fixture() -> tuple[list[bytes], dict[str, Any], list[dict[str, Any]]]:
    lines = gzip.decompress((FIXTURE / "stream.jsonl.gz").read_bytes()).splitlines()
    snaps = json.loads((FIXTURE / "snapshots.json").read_text())
    exceptions = json.loads((FIXTURE / "exceptions.json").read_text())
    return lines, snaps, exceptions


def _engine() -> Engine:
    return Engine(blocklist=load_blocklist(FIXTURE / "blocklist.jsonl"))


def _run(engine: Engine, lines: list[bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for raw in lines:
        ev = parse_event(raw)
        t = ev.time.timestamp()
        out += [to_cloudevent(em) for em in engine.advance(t)]
        out += [to_cloudevent(em) for em in engine.apply(ev, t, t)]
    return out


def test_the_fixture_stream_gives_the_recorded_exceptions_uninterrupted() -> None:
    lines, _, exceptions = _fixture()
    assert len(exceptions) > 50  # a stream that exercises the rules, not an empty one
    assert _run(_engine(), lines) == exceptions


def test_old_format_snapshots_restore_and_the_run_continues_to_the_same_exceptions() -> None:
    lines, snaps, exceptions = _fixture()
    engine = _engine()
    restored = 0
    for name, keys in snaps["detectors"].items():
        det = engine.detector(name)
        for key, blob in keys.items():
            det.restore(key, blob.encode())
            restored += 1
    assert restored > 1000 and all(snaps["detectors"][name] for name in snaps["detectors"])
    rest = _run(engine, lines[snaps["mid"] + 1 :])
    assert rest == exceptions[snaps["emissions_before"] :]
