"""`orderwatch publish --max-lead-seconds`: the bound reaches the record clock; bad values are
refused by the parser before anything is read or sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orderwatch.cli import main
from orderwatch.streams import publish
from orderwatch.streams.publish import MAX_LEAD_MS, PublishResult, RecordClock


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[RecordClock]:
    """The clock each publish run was given (no broker: publish_lines is the CLI's only call)."""
    clocks: list[RecordClock] = []

    async def publish_lines(lines: Any, settings: Any, **kw: Any) -> PublishResult:
        clocks.append(kw["clock"])
        return PublishResult()

    monkeypatch.setattr(publish, "publish_lines", publish_lines)
    return clocks


def test_the_lead_bound_reaches_the_record_clock(tmp_path: Path, sent: list[RecordClock]) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("")
    assert main(["publish", str(path), "--max-lead-seconds", "60"]) == 0
    assert main(["publish", str(path)]) == 0
    assert [c.max_lead_ms for c in sent] == [60_000, MAX_LEAD_MS]


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "soon", ""])
def test_a_bad_lead_bound_is_refused(
    tmp_path: Path, bad: str, sent: list[RecordClock], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["publish", str(path), "--max-lead-seconds", bad])
    assert exc.value.code == 2
    assert "--max-lead-seconds" in capsys.readouterr().err
    assert sent == []
