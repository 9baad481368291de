"""`orderwatch backtest` end to end through `orderwatch.cli.main`: output, dead letters, summary,
clock options, usage and input errors, blocklist and label scoring."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orderwatch.cli import main
from orderwatch.schemas.events import Event
from orderwatch.schemas.exception_event import ExceptionEvent
from tests.factories import T0, at, cancelled, created, paid, reserved, shipment, status

# -- input -------------------------------------------------------------------------------------
NOT_JSON = '{"specversion": "1.0", "id": "broken'
NOT_CLOUDEVENT = json.dumps(
    {"specversion": "1.0", "source": "/tests", "type": "order.created", "subject": "o-x", "data": {}}
)  # no id, no time
UNKNOWN_TYPE = json.dumps(
    {
        "specversion": "1.0",
        "id": "evt-unknown",
        "source": "/tests",
        "type": "order.teleported",
        "time": T0.isoformat(),
        "subject": "o-x",
        "data": {"order_id": "o-x"},
    }
)
INVALID_DATA = json.dumps(
    {
        "specversion": "1.0",
        "id": "evt-bad-data",
        "source": "/tests",
        "type": "inventory.reserved",
        "time": T0.isoformat(),
        "subject": "SKU-1",
        "data": {"sku": "SKU-1", "warehouse_id": "W1", "order_id": "o-1", "quantity": 0},
    }
)
BAD_LINES = {
    NOT_JSON: "not_json",
    NOT_CLOUDEVENT: "not_cloudevent",
    UNKNOWN_TYPE: "unknown_type",
    INVALID_DATA: "invalid_data",
}


def line(ev: Event) -> str:
    return ev.model_dump_json()


def unpaid_orders() -> list[Event]:
    """o-1 is never paid (PAYMENT_TIMEOUT at T0 + 30 min); o-2 is paid and marked paid."""
    return [
        created("o-1", T0),
        created("o-2", at(1), customer="c-2"),
        reserved("o-2", at(1.5)),
        paid("o-2", at(2)),
        status("o-2", at(3), "paid"),
    ]


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def mixed_input(path: Path) -> tuple[Path, dict[int, str]]:
    """Valid events, one line of each malformed kind and blank lines; returns the bad lines by
    line number."""
    evs = unpaid_orders()
    lines = [
        line(evs[0]),
        NOT_JSON,
        line(evs[1]),
        "",
        NOT_CLOUDEVENT,
        line(evs[2]),
        "   ",
        UNKNOWN_TYPE,
        line(evs[3]),
        INVALID_DATA,
        line(evs[4]),
    ]
    write_lines(path, lines)
    return path, {n: text for n, text in enumerate(lines, 1) if text in BAD_LINES}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]


def exceptions(path: Path) -> list[ExceptionEvent]:
    return [ExceptionEvent.model_validate_json(raw) for raw in path.read_text().splitlines()]


def backtest(*args: str | Path) -> int:
    return main(["backtest", *(str(a) for a in args)])


# -- the main run ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_backtest_writes_exceptions_dead_letters_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    src, bad = mixed_input(tmp_path / name)
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    rc = backtest(src, "--output", out, "--dead-letter", dlq, "--until", at(hours=1).isoformat(), "-q")
    assert rc == 0

    # exception CloudEvents, valid per the output contract
    evs = exceptions(out)
    assert [(e.type, e.data.rule, e.subject) for e in evs] == [("exception.opened", "PAYMENT_TIMEOUT", "o-1")]
    assert evs[0].data.event_time == at(30)
    assert evs[0].data.exception_id == evs[0].id.split(":")[0]

    # one dead letter per bad line, with its line number, reason and the original line
    records = read_jsonl(dlq)
    assert [(r["line"], r["reason"], r["original"]) for r in records] == [
        (n, BAD_LINES[text], text) for n, text in sorted(bad.items())
    ]
    assert all(r["error"] for r in records)

    summary = capsys.readouterr().out
    assert re.search(r"lines read\s+11\b", summary)
    assert re.search(r"valid events\s+5\b", summary)
    assert re.search(r"invalid\s+4\s+\(invalid_data 1, not_cloudevent 1, not_json 1, unknown_type 1\)", summary)
    assert re.search(r"rule\s+opened\s+resolved\s+pending", summary)
    assert re.search(r"^\s*PAYMENT_TIMEOUT\s+1\s+0\s+0\s*$", summary, re.M)
    # pending deadline episodes show in the table too (o-2 waits for its shipment, 48 h)
    assert re.search(r"^\s*SHIPMENT_NOT_CREATED\s+0\s+0\s+1\s*$", summary, re.M)
    assert not re.search(r"^\s*DUPLICATE_PAYMENT\b", summary, re.M)  # rules with nothing to say


def test_gzipped_and_plain_input_give_the_same_output(tmp_path: Path) -> None:
    lines = [line(ev) for ev in unpaid_orders()]
    outs = []
    for name in ("a.jsonl", "a.jsonl.gz"):
        src = write_lines(tmp_path / name, lines)
        out = tmp_path / f"{name}.out"
        assert backtest(src, "-o", out, "--until", at(days=30).isoformat(), "-q") == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    assert outs[0].count("\n") >= 2


def test_without_output_file_exceptions_go_to_stdout_and_the_summary_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in unpaid_orders()])
    assert backtest(src, "--until", at(hours=1).isoformat(), "-q") == 0
    captured = capsys.readouterr()
    evs = [ExceptionEvent.model_validate_json(raw) for raw in captured.out.splitlines()]
    assert [e.data.rule for e in evs] == ["PAYMENT_TIMEOUT"]
    assert "lines read" in captured.err
    assert "lines read" not in captured.out


def test_stdin_is_read_with_a_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = ("\n".join(line(ev) for ev in unpaid_orders()) + "\n").encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = tmp_path / "out.jsonl"
    assert backtest("-", "-o", out, "--until", at(hours=1).isoformat(), "-q") == 0
    assert [e.data.rule for e in exceptions(out)] == ["PAYMENT_TIMEOUT"]


def test_blank_lines_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evs = unpaid_orders()
    src = write_lines(tmp_path / "in.jsonl", ["", line(evs[0]), "", "   ", "\t", line(evs[1]), "\r", ""])
    dlq = tmp_path / "dlq.jsonl"
    assert backtest(src, "-o", tmp_path / "out.jsonl", "--dead-letter", dlq, "-q") == 0
    assert dlq.read_text() == ""
    summary = capsys.readouterr().out
    assert re.search(r"valid events\s+2\b", summary)
    assert re.search(r"invalid\s+0\s*$", summary, re.M)


def test_duplicates_are_counted_and_change_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [line(ev) for ev in unpaid_orders()]
    until = at(hours=1).isoformat()
    once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
    assert backtest(write_lines(tmp_path / "1.jsonl", lines), "-o", once, "--until", until, "-q") == 0
    capsys.readouterr()
    assert backtest(write_lines(tmp_path / "2.jsonl", lines + lines[:3]), "-o", twice, "--until", until, "-q") == 0
    assert twice.read_text() == once.read_text()
    assert "duplicates ignored 3" in capsys.readouterr().out


# -- the clock ---------------------------------------------------------------------------------
def test_until_moves_the_clock_so_pending_deadlines_fire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in unpaid_orders()])
    without, with_until = tmp_path / "without.jsonl", tmp_path / "with.jsonl"

    assert backtest(src, "-o", without, "-q") == 0
    summary = capsys.readouterr().out
    assert without.read_text() == ""  # the watermark (last event - 60 s) is before T0 + 30 min
    assert re.search(r"^\s*PAYMENT_TIMEOUT\s+0\s+0\s+1\s*$", summary, re.M)  # reported pending

    assert backtest(src, "-o", with_until, "--until", "2026-03-02T09:31:00+00:00", "-q") == 0
    summary = capsys.readouterr().out
    fired = exceptions(with_until)
    assert [(e.data.rule, e.subject) for e in fired] == [("PAYMENT_TIMEOUT", "o-1")]
    assert fired[0].data.detected_at == at(31)
    assert re.search(r"^\s*PAYMENT_TIMEOUT\s+1\s+0\s+0\s*$", summary, re.M)


def test_until_before_the_deadline_leaves_it_pending(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in unpaid_orders()])
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--until", at(29).isoformat(), "-q") == 0
    assert out.read_text() == ""


def test_lateness_reorders_events_that_arrive_within_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The cancellation (T0 + 10 min) arrives after the shipment (T0 + 11 min), a tracking
    # update (T0 + 15 min) and, on every other topic, events of T0 + 12 min or later (the clock
    # follows the slowest topic). Within 300 s of lateness it is put back in event-time order,
    # so the shipment is seen for a cancelled order; with 0 s it is late and applied too late.
    evs = [
        created("o-1", T0),
        reserved("o-1", at(0.5)),
        paid("o-1", at(1)),
        status("o-1", at(2), "paid"),
        shipment("shipment.created", "o-1", at(11)),
        shipment("shipment.tracking_updated", "o-1", at(15)),
        created("o-2", at(12)),
        reserved("o-2", at(12.5)),
        paid("o-2", at(12.5)),
        status("o-2", at(13), "paid"),
        cancelled("o-1", at(10)),
    ]
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in evs])
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--lateness", "300", "--until", at(20).isoformat(), "-q") == 0
    assert [e.data.rule for e in exceptions(out)] == ["SHIPPED_AFTER_CANCEL"]
    assert "late 0" in capsys.readouterr().out
    assert backtest(src, "-o", out, "--lateness", "0", "--until", at(20).isoformat(), "-q") == 0
    assert exceptions(out) == []
    assert "late 1" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["-5", "abc", "-0.5", ""])
def test_bad_lateness_is_a_usage_error(value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    with pytest.raises(SystemExit) as info:
        backtest(src, "--lateness", value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--lateness" in err
    assert "expected a number of seconds >= 0" in err


@pytest.mark.parametrize("value", ["2026-03-02T09:31:00", "tomorrow"])
def test_until_needs_a_timestamp_with_offset(value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    with pytest.raises(SystemExit) as info:
        backtest(src, "--until", value)
    assert info.value.code == 2
    assert "--until" in capsys.readouterr().err


# -- errors ------------------------------------------------------------------------------------
def test_a_missing_input_file_exits_1_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    out = tmp_path / "out.jsonl"
    assert backtest(missing, "-o", out) == 1
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "does not exist" in err
    assert "Traceback" not in err


def test_a_file_that_is_not_gzip_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl.gz"
    src.write_text(line(created("o-1", T0)) + "\n")
    assert backtest(src, "-o", tmp_path / "out.jsonl", "-q") == 1
    assert str(src) in capsys.readouterr().err


def test_a_truncated_gzip_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [line(created(f"o-{n}", at(n))) for n in range(200)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    assert backtest(src, "-o", tmp_path / "out.jsonl", "-q") == 1
    assert str(src) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[rules.PAYMENT_TIMEOUT]\nthreshold = "soon"', "rules.PAYMENT_TIMEOUT.threshold"),
        ('[rules.PAYMENT_TIMEOUT]\nthreshhold = "45m"', "rules.PAYMENT_TIMEOUT.threshhold"),
        ('[merchant."m-1".rules.ADDRESS_CLUSTER]\nenabled = false', "merchant.m-1.rules.ADDRESS_CLUSTER"),
    ],
)
def test_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, key: str
) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    cfg = tmp_path / "rules.toml"
    cfg.write_text(toml)
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--config", cfg) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert key in err
    assert not out.exists()  # nothing was replayed


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    assert backtest(src, "--config", tmp_path / "nope.toml") == 2
    assert "nope.toml" in capsys.readouterr().err


def test_the_config_changes_what_fires(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in unpaid_orders()])
    cfg = tmp_path / "rules.toml"
    cfg.write_text('[rules.PAYMENT_TIMEOUT]\nthreshold = "2h"\n')
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--config", cfg, "--until", at(hours=1).isoformat(), "-q") == 0
    assert out.read_text() == ""
    assert backtest(src, "-o", out, "--config", cfg, "--until", at(hours=3).isoformat(), "-q") == 0
    assert [e.data.rule for e in exceptions(out)] == ["PAYMENT_TIMEOUT"]


# -- blocklist and labels ----------------------------------------------------------------------
def test_blocklist_file_makes_blocklisted_order_fire(tmp_path: Path) -> None:
    evs = [created("o-1", T0, customer="c-1"), created("o-9", at(1), customer="c-9")]
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in evs])
    blocklist = write_lines(
        tmp_path / "blocklist.jsonl",
        [
            json.dumps({"key": "customer:c-9", "value": {"reason": "chargebacks"}}),
            json.dumps({"key": "customer:c-7", "value": {"reason": "fraud"}}),
        ],
    )
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--blocklist", blocklist, "-q") == 0
    fired = [e for e in exceptions(out) if e.data.rule == "BLOCKLISTED_ORDER"]
    assert [(e.subject, e.data.order_id) for e in fired] == [("o-9", "o-9")]
    assert (fired[0].data.category, fired[0].data.severity) == ("fraud", "high")
    assert fired[0].data.recommended_action == "hold_orders_for_review"
    assert fired[0].data.evidence["reason"] == "chargebacks"

    out_without = tmp_path / "without.jsonl"
    assert backtest(src, "-o", out_without, "-q") == 0
    assert not [e for e in exceptions(out_without) if e.data.rule == "BLOCKLISTED_ORDER"]


def test_a_blocklist_tombstone_removes_the_entry(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-9", T0, customer="c-9"))])
    blocklist = write_lines(
        tmp_path / "blocklist.jsonl",
        [
            json.dumps({"key": "customer:c-9", "value": {"reason": "chargebacks"}}),
            json.dumps({"key": "customer:c-9", "value": None}),
        ],
    )
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--blocklist", blocklist, "-q") == 0
    assert not [e for e in exceptions(out) if e.data.rule == "BLOCKLISTED_ORDER"]


def test_a_bad_blocklist_record_exits_1_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    blocklist = write_lines(
        tmp_path / "blocklist.jsonl",
        [
            json.dumps({"key": "customer:c-9", "value": {"reason": "chargebacks"}}),
            json.dumps({"key": "phone:+4915123456789", "value": {"reason": "x"}}),
        ],
    )
    assert backtest(src, "--blocklist", blocklist) == 1
    assert f"{blocklist}:2" in capsys.readouterr().err


def test_labels_print_precision_and_recall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # o-1 and o-3 are never paid; only o-1 is labelled; a DUPLICATE_PAYMENT label is missed.
    evs = [*unpaid_orders(), created("o-3", at(5), customer="c-3")]
    src = write_lines(tmp_path / "in.jsonl", [line(ev) for ev in evs])
    labels = write_lines(
        tmp_path / "labels.jsonl",
        [
            json.dumps({"rule": "PAYMENT_TIMEOUT", "subject": "o-1"}),
            json.dumps({"rule": "DUPLICATE_PAYMENT", "subject": "o-2"}),
        ],
    )
    out = tmp_path / "out.jsonl"
    assert backtest(src, "-o", out, "--labels", labels, "--until", at(hours=1).isoformat(), "-q") == 0
    report = capsys.readouterr().out
    assert re.search(r"rule\s+expected\s+found\s+precision\s+recall", report)
    # PAYMENT_TIMEOUT: expected 1, found 2 (o-1, o-3), precision 1/2, recall 1/1
    assert re.search(r"^\s*PAYMENT_TIMEOUT\s+1\s+2\s+0\.500\s+1\.000\s*$", report, re.M)
    # DUPLICATE_PAYMENT: expected 1, found 0, recall 0
    assert re.search(r"^\s*DUPLICATE_PAYMENT\s+1\s+0\s+\S+\s+0\.000\s*$", report, re.M)


def test_labels_that_are_not_json_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    labels = write_lines(tmp_path / "labels.jsonl", ['{"rule": "PAYMENT_TIMEOUT"', ""])
    assert backtest(src, "--labels", labels) == 1
    assert f"{labels}:1" in capsys.readouterr().err


def test_detected_at_and_handle_by_follow_the_clock(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0))])
    out = tmp_path / "out.jsonl"
    until = T0 + timedelta(hours=2)
    assert backtest(src, "-o", out, "--until", until.isoformat(), "-q") == 0
    (timeout,) = [e for e in exceptions(out) if e.data.rule == "PAYMENT_TIMEOUT"]
    assert timeout.data.detected_at == until
    assert timeout.data.handle_by == until + timedelta(hours=24)  # severity low
    assert timeout.time == until


def test_an_inventory_snapshot_a_day_ahead_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    from orderwatch.simulate import simulate

    src = tmp_path / "sim.jsonl"
    simulate(orders=400, seed=11, output=src, labels=tmp_path / "labels", blocklist=tmp_path / "bl")
    lines = src.read_bytes().splitlines(keepends=True)
    future = json.loads(lines[len(lines) // 3])
    skewed_ev = {
        "specversion": "1.0",
        "id": "skewed-1",
        "source": "/bad-clock",
        "type": "inventory.level_reported",
        "time": (datetime.fromisoformat(future["time"]) + timedelta(hours=24)).isoformat(),
        "subject": "sku-unrelated",
        "data": {"sku": "sku-unrelated", "warehouse_id": "w-9", "on_hand": 3, "reserved": 0},
    }
    skewed = tmp_path / "skewed.jsonl"
    skewed.write_bytes(
        b"".join([*lines[: len(lines) // 3], json.dumps(skewed_ev).encode() + b"\n", *lines[len(lines) // 3 :]])
    )
    clean_out, skewed_out, dlq = tmp_path / "clean.out", tmp_path / "skewed.out", tmp_path / "dlq"
    assert backtest(src, "-o", clean_out, "-q") == 0
    assert backtest(skewed, "-o", skewed_out, "--dead-letter", dlq, "-q") == 0
    assert skewed_out.read_bytes() == clean_out.read_bytes()
    refused = [json.loads(r["original"])["id"] for r in read_jsonl(dlq) if r["reason"] == "from_future"]
    assert refused == ["skewed-1"]
    # The per-topic clock holds alone too (tests/detectors/test_skew.py shows what a single
    # global watermark does without either): only firing times may differ, not which exceptions.
    assert backtest(skewed, "-o", skewed_out, "--max-skew", "0", "-q") == 0
    assert [r["id"] for r in read_jsonl(skewed_out)] == [r["id"] for r in read_jsonl(clean_out)]


def test_an_event_time_ahead_of_the_wall_clock_is_from_future(tmp_path: Path) -> None:
    soon = datetime.now(UTC) + timedelta(hours=2)
    src = write_lines(tmp_path / "in.jsonl", [line(created("o-1", T0)), line(created("o-2", soon))])
    dlq = tmp_path / "dlq.jsonl"
    assert backtest(src, "-o", tmp_path / "out", "--dead-letter", dlq, "-q") == 0
    assert [r["reason"] for r in read_jsonl(dlq)] == ["from_future"]
    assert backtest(src, "-o", tmp_path / "out", "--dead-letter", dlq, "--max-future", "0", "-q") == 0
    assert read_jsonl(dlq) == []


def test_dead_letters_keep_the_original_bytes_losslessly(tmp_path: Path) -> None:
    bad = [b"\xff\xfe not utf-8 {\n", b'{"not": "an event", "x": "\\u00e9 caf\xc3\xa9"}\r\n']
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(bad))
    dlq = tmp_path / "dlq.jsonl"
    assert backtest(src, "-o", tmp_path / "out", "--dead-letter", dlq, "-q") == 0
    rows = read_jsonl(dlq)
    assert base64.b64decode(rows[0]["original_base64"]) + b"\n" == bad[0]
    assert rows[1]["original"].encode() + b"\n" == bad[1]
