"""`orderwatch demo` end to end on the local stack: the README's main command."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from orderwatch.streams.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_scores_every_rule_perfectly() -> None:
    out = io.StringIO()
    misses = run_demo(orders=600, seed=3, timeout=200, out=out)
    text = out.getvalue()
    assert misses == 0, text[-3000:]
    assert "all rules at precision and recall 1.000" in text
    assert "worker started" in text and "published" in text


def test_demo_on_a_terminal_redraws_in_place_and_logs_no_leader_warnings(tmp_path: Path) -> None:
    """`orderwatch demo` run as a user runs it, on a pseudo-terminal: the table redraws with cursor
    movement, and no NotLeaderForPartition warning shows while its fresh topics elect leaders."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become `orderwatch demo` on the terminal
        os.chdir(tmp_path)
        os.execv(sys.executable, [sys.executable, "-m", "orderwatch.cli", "demo", "--orders", "300", "--seed", "5"])
    chunks: list[bytes] = []
    deadline = time.monotonic() + 260  # then up to 15 s to exit and 10 s to stop: under the 300 s timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break  # nothing more within the deadline
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    text = b"".join(chunks).decode(errors="replace")
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline + 15:  # it closed the terminal: exiting
        time.sleep(0.1)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        # Still running: stop it and say what it showed last, rather than block in waitpid until
        # pytest-timeout kills the test with nothing to read.
        os.kill(pid, signal.SIGTERM)  # the demo stops its worker and deletes its topics
        stop = time.monotonic() + 10
        while not (reaped := os.waitpid(pid, os.WNOHANG)[0]) and time.monotonic() < stop:
            time.sleep(0.1)
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
        pytest.fail(f"the demo did not end within 260 s; its terminal last showed:\n{text[-3000:]}")
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    assert "all rules at precision and recall 1.000" in text
    assert "\x1b[J" in text and re.search(r"\x1b\[\d+F", text), text[-2000:]
    assert "NotLeaderForPartition" not in text and "NOT_LEADER" not in text
    assert "Traceback" not in text
    assert not list(tmp_path.glob("*-data"))  # faust's data directory went with the run


def test_demo_output_to_a_pipe_has_no_escape_sequences_and_no_leader_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = io.StringIO()
    with caplog.at_level(logging.WARNING):
        assert run_demo(orders=300, seed=5, timeout=200, out=out) == 0, out.getvalue()[-3000:]
    assert "\x1b" not in out.getvalue()
    assert not [r for r in caplog.records if "NotLeader" in r.getMessage() or "NOT_LEADER" in r.getMessage()]
