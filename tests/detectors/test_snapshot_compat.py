"""Stored state survives a change of code: snapshots written by the previous format restore into
the current detectors and the run goes on to the same exceptions (tests/fixtures/snapshots_v0,
written by its make_fixture.py with the code before snapshots were versioned)."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orderwatch.backtest import load_blocklist
from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import to_cloudevent
from orderwatch.detectors.snapshots import GC, RULE_IDS
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


def _first_half_snapshots() -> dict[str, dict[str, bytes]]:
    lines, snaps, _ = _fixture()
    engine = _engine()
    _run(engine, lines[: snaps["mid"] + 1])
    return {name: {k: engine.detector(name).snapshot(k) for k in keys} for name, keys in snaps["detectors"].items()}


def test_snapshots_carry_their_format_and_round_trip() -> None:
    snaps = _first_half_snapshots()
    again = _engine()
    for name, keys in snaps.items():
        for key, blob in keys.items():
            assert blob.startswith(b'["v1",'), (name, blob[:40])
            again.detector(name).restore(key, blob)
            assert again.detector(name).snapshot(key) == blob


def test_a_snapshot_from_a_newer_format_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="newer than this code reads"):
        _engine().orders.restore("o-1", b'["v2",0]')


def test_every_rule_has_a_frozen_identifier() -> None:
    assert set(RULES) | {GC} <= set(RULE_IDS)
    assert sorted(RULE_IDS.values()) == list(range(len(RULE_IDS)))  # never reused, never skipped


# Run in a fresh interpreter: the catalog gains a rule (at its front, the worst place for
# positional numbering) before any detector module is imported, as a new release would.
_ADDED_RULE = """
import hashlib, json, sys
from orderwatch.detectors import catalog
new = catalog.Rule("A_NEW_RULE", "payment", "low", "deadline", "look", "never", "never")
catalog.RULES = {"A_NEW_RULE": new, **catalog.RULES}
from tests.detectors import test_snapshot_compat as t
snaps = t._first_half_snapshots()
assert "A_NEW_RULE" in t.RULES and list(t.RULES)[0] == "A_NEW_RULE"
print(json.dumps({n: {k: hashlib.sha256(b).hexdigest() for k, b in v.items()} for n, v in snaps.items()}))
"""


def test_adding_a_rule_to_the_catalog_changes_no_stored_state() -> None:
    here = {n: {k: hashlib.sha256(b).hexdigest() for k, b in v.items()} for n, v in _first_half_snapshots().items()}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _ADDED_RULE], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == here
