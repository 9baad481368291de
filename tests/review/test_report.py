"""`orderwatch report` on a simulated run and on a hand-built case set: the figures, the two
formats, self-containment (nothing fetched), no personal data, and bad input."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orderwatch.backtest import load_blocklist, open_lines, run_backtest
from orderwatch.calibrate import calibrate, measure
from orderwatch.cli import main
from orderwatch.review import Analytics, read_case_set
from orderwatch.review.report import build_report, render_html, render_markdown
from orderwatch.simulate import DEFAULT_START, simulate
from tests.review.test_analytics import ACTIONS, CASES, INCIDENTS, PERIOD

DAY = 86400.0
PHONE = re.compile(r"\+\d{8,}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("report")
    files = {"events": d / "sim.jsonl", "labels": d / "l.jsonl", "blocklist": d / "b.jsonl"}
    simulate(
        orders=6000, seed=4, output=files["events"], labels=files["labels"], blocklist=files["blocklist"],
        slow_method="bank_transfer",
    )  # fmt: skip
    files["exceptions"] = d / "exceptions.jsonl"
    with open(files["exceptions"], "w") as out:
        run_backtest(open_lines(files["events"]), blocklist=load_blocklist(files["blocklist"]), output=out)
    cal = calibrate(measure(open_lines(files["events"]), blocklist=load_blocklist(files["blocklist"])), budget=0.01)
    files["calibration"] = d / "cal.json"
    files["calibration"].write_text(json.dumps(cal.to_dict()))
    return files


def _opened_between(path: Path, start: float, end: float) -> int:
    n = 0
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if ev["type"] == "exception.opened" and ev["id"].endswith(":opened"):
            t = datetime.fromisoformat(ev["data"]["detected_at"]).timestamp()
            n += start <= t < end
    return n


@pytest.mark.slow
def test_report_of_a_simulated_run(run: dict[str, Path], tmp_path: Path) -> None:
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    end = DEFAULT_START + 12 * 3600
    argv = ["report", "--cases", str(run["exceptions"]), "--history", str(run["events"])]
    argv += ["--calibration", str(run["calibration"]), "--period", "6h"]
    argv += ["--end", datetime.fromtimestamp(end, UTC).isoformat(), "--html", str(html), "--markdown", str(md)]
    assert main(argv) == 0
    text = md.read_text()
    # Known answers, counted straight from the exception events.
    current = _opened_between(run["exceptions"], end - 6 * 3600, end)
    previous = _opened_between(run["exceptions"], end - 12 * 3600, end - 6 * 3600)
    assert current > 100 and previous > 100
    assert f"| Exceptions | {current:,} | {previous:,} | {current - previous:+,} |" in text
    for section in ("## What rose, what fell", "## SLA by severity", "## Worst incidents", "## Recurring causes",
                    "## Backlog at", "## Where exceptions happen", "## Rules that look mis-tuned"):  # fmt: skip
        assert section in text
    assert "| PAYMENT_TIMEOUT | payment_method=bank_transfer | 30m | 4d |" in text
    assert "**payment_method**: bank_transfer" in text  # the slow method dominates the exceptions
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 4
    assert "default-src 'none'" in page
    # Self-contained: no script, nothing to fetch, no link out (the SVG namespace is a name, not a fetch).
    assert not re.search(r"<script|<link|<img|<iframe|src=|href=|url\(|@import", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    for doc in (page, text):
        assert not PHONE.search(doc)
        assert "Hauptstrasse" not in doc and "Industriestrasse" not in doc


def test_report_of_a_case_store_export_shows_handling_incidents_and_actions() -> None:
    cs = read_case_set([json.dumps(d).encode() for d in CASES + ACTIONS + INCIDENTS])
    data = build_report(Analytics(cs), PERIOD)
    md = render_markdown(data)
    assert "| Exceptions | 5 | 1 | +4 |" in md
    # Before: c6 alone, past its handle_by and never handled.
    assert "| Handled within handle_by | 50.0% | 0.0% | +50.0 pt |" in md
    assert "| Time to acknowledge, median | 20m | - |  |" in md  # 10, 20 and 300 minutes
    assert "| inc-1 | TRACKING_STALLED | carrier=dhl | 2 | open | 9h |" in md
    assert "| contact_carrier | 3 | 1 | 0 | 1 | 1 | 0 | 1 | 0 |" in md
    assert "| high | 2 | 2 | 2 | 100.0% |" in md
    assert "Not assessed" in md  # no calibration given
    html = render_html(data)
    assert "inc-1" in html and "<svg" in html


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_report_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "c.jsonl", "\n".join(json.dumps(d) for d in CASES))
    assert main(["report", "--cases", str(tmp_path / "none.jsonl")]) == 1
    assert main(["report", "--cases", _write(tmp_path, "bad.jsonl", json.dumps(CASES[0]) + "\n{oops\n")]) == 1
    assert "line 2" in capsys.readouterr().err
    assert main(["report", "--cases", good, "--calibration", _write(tmp_path, "cal.json", "[1]")]) == 1
    assert main(["report", "--cases", good, "--calibration", _write(tmp_path, "cal2.json", "{")]) == 1
    assert main(["report", "--cases", good, "--teams", _write(tmp_path, "t.toml", "[teams]\npayment = 3\n")]) == 2
    assert main(["report", "--cases", good, "--teams", _write(tmp_path, "t2.toml", "teams = [")]) == 2
    for bad in (["--period", "soon"], ["--period", "-1d"], ["--end", "2026-03-02T00:00:00"], ["--end", "x"]):
        with pytest.raises(SystemExit) as info:
            main(["report", "--cases", good, *bad])
        assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["report"])  # a source is required


def test_report_cli_writes_markdown_to_stdout_and_maps_teams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, "c.jsonl", "\n".join(json.dumps(d) for d in CASES + ACTIONS + INCIDENTS))
    teams = _write(tmp_path, "teams.toml", '[teams]\npayment = "payments-team"\nTRACKING_STALLED = "carriers"\n')
    end = datetime.fromtimestamp(PERIOD.end, UTC).isoformat()
    assert main(["report", "--cases", good, "--teams", teams, "--period", "10h", "--end", end]) == 0
    out: Any = capsys.readouterr().out
    assert out.startswith("# Order exceptions review")
    assert "| payments-team | 2 |" in out and "| carriers | 2 |" in out
