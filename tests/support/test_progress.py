"""wait_for_worker on a clock of its own: it waits past any fixed time while the worker moves,
returns as soon as a look is done, gives up after the quiet spell or the cap saying what it saw
and what the log said last, and fails at once on a wrong look or a worker that exited. What a
worker read, from its /metrics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.progress import Look, events_read, log_report, wait_for_worker
from tests.support.worker import free_port


class Clock:
    """Fake wall time: `sleep` moves it, nothing really sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Script:
    """Looks played back in order, the last one repeated."""

    def __init__(self, looks: list[Look]) -> None:
        self.looks = looks
        self.calls = 0

    async def __call__(self) -> Look:
        self.calls += 1
        return self.looks[min(self.calls, len(self.looks)) - 1]


@pytest.fixture
def alive() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "worker.log"
    late = "[2026-11-27 07:13:14,260] [32656] [WARNING] provider: late event t3a-by-provider[{}]@{}, {} s behind\n"
    lines = [late.format(i % 4, i, 7189.7 - i) for i in range(30)]
    lines += [f"line {i}\n" for i in range(100)]
    lines.append("[2026-11-27 07:13:15,041] [32656] [ERROR] Timer commit is overlapping (interval=2.8 runtime=2.89)\n")
    lines.append("orders: partition 3 ready\n")
    path.write_text("".join(lines))
    return path


def _counting(n: int) -> list[Look]:
    return [Look(False, i, f"cases {i}") for i in range(n)]


async def test_goes_on_while_the_worker_moves(alive: subprocess.Popen[bytes], log: Path) -> None:
    clock = Clock()
    # one more case every 10 s for 500 s: far past any quiet spell, never quiet for 60 s
    script = Script([*_counting(250), Look(True, 250, "cases 250")])
    got = await wait_for_worker(
        script, alive, log, what="250 cases", quiet=60, cap=900, every=2, wall=clock.wall, sleep=clock.sleep
    )
    assert got.done and got.seen == "cases 250"
    assert clock.now == 502  # returned at the first look that was done, not later


async def test_gives_up_after_the_quiet_spell_saying_what_it_saw(alive: subprocess.Popen[bytes], log: Path) -> None:
    clock = Clock()
    script = Script([*_counting(5), Look(False, 4, "ready True, cases 4 of 25")])  # stops moving at 10 s
    with pytest.raises(AssertionError) as failed:
        await wait_for_worker(
            script, alive, log, what="25 cases", quiet=60, every=2, wall=clock.wall, sleep=clock.sleep
        )
    text = str(failed.value)
    assert "nothing moved for 60 s" in text and "70 s in all" in text
    assert "last seen: ready True, cases 4 of 25" in text
    assert text.rstrip().endswith("orders: partition 3 ready")  # the log's last line
    assert "line 60" not in text and "line 62" in text  # the last 40 lines, not the whole log
    # the warnings the tail no longer shows, counted by kind, the most frequent first
    counted = text.split("counted:\n")[1].split("\nthe worker's log")[0].splitlines()
    assert counted == [
        "  30 x [WARNING] provider: late event N-by-provider[N]@N, N s behind",
        "  1 x [ERROR] Timer commit is overlapping (interval=N runtime=N)",
    ]
    assert clock.now == 70


async def test_the_cap_bounds_a_worker_that_moves_forever(alive: subprocess.Popen[bytes], log: Path) -> None:
    clock = Clock()
    script = Script(_counting(10_000))
    with pytest.raises(AssertionError, match=r"\(300 s cap, 300 s in all\); last seen: cases 149"):
        await wait_for_worker(
            script, alive, log, what="done", quiet=60, cap=300, every=2, wall=clock.wall, sleep=clock.sleep
        )


async def test_a_wrong_look_fails_at_once(alive: subprocess.Popen[bytes], log: Path) -> None:
    clock = Clock()
    wrong = Look(False, 1, "cases 612 of 25", wrong="612 cases listed, the backtest has 25")
    script = Script([Look(False, 0, "cases 0"), wrong])
    with pytest.raises(AssertionError, match="612 cases listed, the backtest has 25; seen: cases 612 of 25 after 4 s"):
        await wait_for_worker(script, alive, log, what="25 cases", wall=clock.wall, sleep=clock.sleep)
    assert script.calls == 2


async def test_a_worker_that_exited_fails_at_once(log: Path) -> None:
    clock = Clock()
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    script = Script([Look(False, 0, "cases 0")])
    with pytest.raises(AssertionError, match=r"the worker exited \(3\) while waiting for 25 cases"):
        await wait_for_worker(script, proc, log, what="25 cases", wall=clock.wall, sleep=clock.sleep)
    assert script.calls == 0


def test_log_report_of_a_missing_log_and_of_a_quiet_one(tmp_path: Path) -> None:
    assert log_report(tmp_path / "none.log") == "(no log)"
    quiet = tmp_path / "quiet.log"
    quiet.write_text("[2026-11-27 07:13:15,041] [3] [INFO] Worker ready\n")
    assert log_report(quiet) == (
        "the worker's warnings and errors, counted:\n  none\n"
        "the worker's log, last lines:\n[2026-11-27 07:13:15,041] [3] [INFO] Worker ready"
    )


def test_log_report_names_how_many_more_kinds(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("".join(f"[t] [3] [WARNING] kind {chr(97 + i)}\n" for i in range(10)))
    assert "  ... 2 more kinds" in log_report(log, kinds=8)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=(
            "# HELP orderwatch_events_in_total Events read\n"
            'orderwatch_events_in_total{agent="inventory",topic="t-inventory"} 1688.0\n'
            'orderwatch_events_in_total{agent="orders",topic="t-orders"} 12.0\n'
            'orderwatch_handler_messages_total{outcome="applied"} 3.0\n'
            'orderwatch_events_late_total{agent="orders"} 99.0\n'
        )
    )


async def test_events_read_sums_what_the_agents_and_handlers_read() -> None:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        assert await events_read(server.port) == 1703.0
    finally:
        await server.close()
    assert await events_read(server.port) is None  # nobody listens: not started yet, or gone
    assert await events_read(None) is None
