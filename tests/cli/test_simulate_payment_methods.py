"""`simulate --payment-methods / --slow-method`: the optional payment_method of order.created, a
method that clears in days, and the default stream left exactly as it was."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from orderwatch.cli import main
from orderwatch.schemas.events import parse_event
from orderwatch.simulate import PAYMENT_METHODS, simulate

DAY = 86400.0


def _sim(tmp_path: Path, name: str, **kw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    out = tmp_path / f"{name}.jsonl"
    simulate(orders=600, seed=3, output=out, labels=tmp_path / f"{name}.l", blocklist=tmp_path / f"{name}.b", **kw)
    events = []
    for line in out.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the simulator's deliberately malformed lines
    return events, (tmp_path / f"{name}.l").read_text().splitlines()


def _t(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(ev["time"]).timestamp()


def test_the_default_stream_has_no_payment_method(tmp_path: Path) -> None:
    events, _ = _sim(tmp_path, "plain")
    created = [e for e in events if e.get("type") == "order.created"]
    assert created and all("payment_method" not in e["data"] for e in created)


def test_payment_methods_add_the_field_and_change_nothing_else(tmp_path: Path) -> None:
    plain, plain_labels = _sim(tmp_path, "plain")
    with_pm, pm_labels = _sim(tmp_path, "pm", payment_methods=True)
    assert pm_labels == plain_labels
    methods: dict[str, str] = {}
    for e in with_pm:
        if e.get("type") == "order.created":
            methods[e["data"]["order_id"]] = e["data"]["payment_method"]
            parse_event(json.dumps(e).encode())  # valid against the schema
    assert set(methods.values()) == set(PAYMENT_METHODS)
    paid = [e for e in with_pm if e.get("type") == "payment.succeeded" and e["data"]["order_id"] in methods]
    assert paid and all(e["data"]["method"] == methods[e["data"]["order_id"]] for e in paid)
    # Without the fields the two streams are the same events at the same times.
    strip = [
        {**e, "data": {k: v for k, v in e["data"].items() if k not in ("payment_method", "method")}}
        for e in with_pm
        if isinstance(e.get("data"), dict)
    ]
    base = [{**e, "data": {k: v for k, v in e["data"].items() if k != "method"}} for e in plain if "data" in e]
    assert strip == base


def test_the_slow_method_clears_in_days_and_the_others_in_minutes(tmp_path: Path) -> None:
    events, labels = _sim(tmp_path, "slow", slow_method="bank_transfer")
    labelled = {json.loads(line)["order_id"] for line in labels}
    created = {e["data"]["order_id"]: e for e in events if e.get("type") == "order.created"}
    first_pay: dict[str, float] = {}
    for e in events:
        if e.get("type") == "payment.succeeded":
            oid = e["data"]["order_id"]
            first_pay[oid] = min(first_pay.get(oid, float("inf")), _t(e))
    waits: dict[str, list[float]] = {m: [] for m in PAYMENT_METHODS}
    for oid, ev in created.items():
        if oid in first_pay and oid not in labelled:
            waits[ev["data"]["payment_method"]].append(first_pay[oid] - _t(ev))
    slow = sorted(waits["bank_transfer"])
    assert len(slow) > 50
    # Failure-spike journeys keep their minutes; every other healthy bank transfer waits days.
    assert sum(w >= 1 * DAY for w in slow) / len(slow) > 0.9
    assert max(slow) <= 4 * DAY + 600
    for method in ("card", "wallet"):
        assert waits[method] and max(waits[method]) < 30 * 60
    # Labels are untouched: the slow method changes no anomaly's journey.
    _, plain_labels = _sim(tmp_path, "plain")
    assert labels == plain_labels


def test_simulate_cli_rejects_an_unknown_slow_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--orders", "10", "--output", str(tmp_path / "x.jsonl"), "--slow-method", "cheque"])
    assert info.value.code == 2
    assert "invalid choice: 'cheque'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="slow method 'cheque'"):
        simulate(
            orders=1,
            seed=1,
            output=tmp_path / "y",
            labels=tmp_path / "l",
            blocklist=tmp_path / "b",
            slow_method="cheque",
        )
