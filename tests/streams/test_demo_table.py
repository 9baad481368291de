"""The demo's live table: redrawn in place on a terminal, plain appended lines elsewhere."""

from __future__ import annotations

import io
from typing import Any

from orderwatch.streams.demo import LiveTable


def _events(n_open: int, n_resolved: int) -> list[dict[str, Any]]:
    ev = [{"type": "exception.opened", "data": {"rule": "PAYMENT_WITHOUT_ORDER"}}] * n_open
    return ev + [{"type": "exception.resolved", "data": {"rule": "PAYMENT_WITHOUT_ORDER"}}] * n_resolved


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_appends_plain_lines() -> None:
    out = io.StringIO()
    table = LiveTable(out)
    assert not table.tty
    table.draw(_events(1, 0), 1.0)
    table.draw(_events(2, 1), 3.0)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "[  1.0 s] 1 exception events" in text and "[  3.0 s] 3 exception events" in text
    assert text.count("PAYMENT_WITHOUT_ORDER") == 2  # both drawings stay


def test_a_terminal_redraws_over_the_previous_drawing() -> None:
    out = _Tty()
    table = LiveTable(out)
    assert table.tty
    table.draw([], 0.5)  # one line: the header
    table.draw(_events(2, 1), 2.5)  # two lines
    table.draw(_events(3, 1), 4.5)
    first, second, third = out.getvalue().split("\x1b[J")[1:]
    assert out.getvalue().startswith("\x1b[J")  # nothing above to go back over
    assert first.endswith("\x1b[1F")  # back up over the one-line drawing ...
    assert second.startswith("[  2.5 s]") and second.endswith("\x1b[2F")  # ... then the two-line one
    assert third.startswith("[  4.5 s] 4 exception events")
    assert "     3 opened     1 resolved" in third


def test_a_stream_without_isatty_is_not_a_terminal() -> None:
    class Bare:
        def write(self, s: str) -> int:
            return len(s)

        def flush(self) -> None:
            pass

    assert not LiveTable(Bare()).tty  # type: ignore[arg-type]
