"""A stop that overruns its deadline ends the process with STOP_OVERRAN, saying what was left
unsent; one that ends first, or a second stop, changes nothing. (The real worker's overrunning
stop: tests/integration/test_broker_outage.py.)"""

from __future__ import annotations

import logging
import threading

import pytest

from orderwatch.streams.worker import STOP_OVERRAN, StopDeadline


class Exits:
    """What the deadline would have exited with (os._exit in the worker)."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.done = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.done.set()


def test_an_armed_deadline_exits_with_stop_overran_and_logs_what_was_unsent(caplog: pytest.LogCaptureFixture) -> None:
    exits = Exits()
    deadline = StopDeadline(0.05, lambda: "3 of 5 changelog records acknowledged", exit=exits)
    with caplog.at_level(logging.ERROR, logger="orderwatch.worker"):
        deadline.arm()
        assert exits.done.wait(10)
    assert exits.codes == [STOP_OVERRAN]
    assert "the stop did not end within 0 s: 3 of 5 changelog records acknowledged" in caplog.text


def test_a_second_stop_does_not_push_the_deadline_back() -> None:
    exits = Exits()
    deadline = StopDeadline(0.2, lambda: "", exit=exits)
    deadline.arm()
    first = deadline._timer
    deadline.arm()
    assert deadline._timer is first
    assert exits.done.wait(10)
    assert exits.codes == [STOP_OVERRAN]


def test_a_deadline_never_armed_never_exits() -> None:
    exits = Exits()
    StopDeadline(0.01, lambda: "", exit=exits)
    assert not exits.done.wait(0.3)
