"""The simulator's labels and the detector agree: every injected anomaly is found, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orderwatch.backtest import load_blocklist, open_lines, run_backtest, score
from orderwatch.cli import main
from orderwatch.detectors.catalog import RULES
from orderwatch.simulate import simulate


@pytest.mark.slow
def test_backtest_of_a_simulated_stream_finds_exactly_the_labelled_anomalies(tmp_path: Path) -> None:
    out, labels, blocklist = tmp_path / "sim.jsonl.gz", tmp_path / "labels.jsonl", tmp_path / "bl.jsonl"
    stats = simulate(orders=3000, seed=5, output=out, labels=labels, blocklist=blocklist)
    expected = [json.loads(line) for line in labels.read_text().splitlines()]
    assert {lab["rule"] for lab in expected} == set(RULES), "every rule gets at least one anomaly"
    res = run_backtest(open_lines(out), blocklist=load_blocklist(blocklist), keep=True)
    assert res.invalid.total() == stats["malformed"] > 0
    assert res.duplicates == stats["duplicates"] > 0
    scores = score(res.emissions, expected)
    misses = {rule: (fp, fn) for rule, (_, fp, fn) in scores.items() if fp or fn}
    assert misses == {}
    assert sum(res.pending.values()) == 0, "the stream runs long enough for every deadline"


def test_simulate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        simulate(orders=200, seed=9, output=out, labels=tmp_path / f"{name}.l", blocklist=tmp_path / f"{name}.b")
        runs.append(out.read_bytes())
    assert runs[0] == runs[1]


def test_simulate_cli_writes_stream_labels_and_blocklist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.jsonl"
    assert main(["simulate", "--orders", "300", "--seed", "2", "--output", str(out)]) == 0
    assert (tmp_path / "s.labels.jsonl").exists()
    assert (tmp_path / "s.blocklist.jsonl").exists()
    lines = out.read_text().splitlines()
    assert len(lines) > 300 * 5
    printed = capsys.readouterr().out
    assert "300 orders" in printed
    assert f"orderwatch backtest {out}" in printed
