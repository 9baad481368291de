"""`orderwatch calibrate`: thresholds learned from history, and the shadow backtest that checks them."""

from __future__ import annotations

import gzip
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from orderwatch.backtest import load_blocklist, open_lines
from orderwatch.calibrate import (
    GRID,
    History,
    SegmentSniffer,
    calibrate,
    config_to_toml,
    format_duration,
    human_duration,
    load_labels,
    measure,
    shadow_backtest,
)
from orderwatch.cli import main
from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import RulesConfig
from orderwatch.errors import ConfigError
from orderwatch.simulate import simulate
from tests.factories import T0, at, cancelled, created, paid, raw, status

MIN = 60.0
H = 3600.0
D = 86400.0


# -- the must-show: one payment method clears in days ----------------------------------------------
@pytest.fixture(scope="module")
def slow_history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("slow")
    files = {"events": d / "sim.jsonl.gz", "labels": d / "labels.jsonl", "blocklist": d / "bl.jsonl"}
    simulate(
        orders=3000,
        seed=7,
        output=files["events"],
        labels=files["labels"],
        blocklist=files["blocklist"],
        slow_method="bank_transfer",
    )
    return files


def _methods(path: Path) -> dict[str, str]:
    out = {}
    for line in open_lines(path):
        if b'"order.created"' in line:
            with_data = json.loads(line)
            out[with_data["data"]["order_id"]] = with_data["data"]["payment_method"]
    return out


@pytest.mark.slow
def test_calibrate_fixes_the_slow_method_and_still_catches_every_other_payment_anomaly(
    slow_history: dict[str, Path],
) -> None:
    events, labels_path, bl = slow_history["events"], slow_history["labels"], slow_history["blocklist"]
    hist = measure(open_lines(events), blocklist=load_blocklist(bl))
    cal = calibrate(hist, budget=0.01)
    # One proposal, the right one: bank transfers' PAYMENT_TIMEOUT, days instead of 30 minutes.
    assert [(p.rule, p.scope, p.value) for p in cal.proposals] == [
        ("PAYMENT_TIMEOUT", "payment_method", "bank_transfer")
    ]
    (prop,) = cal.proposals
    assert prop.current == 30 * MIN
    assert 3 * D <= prop.proposed <= 5 * D
    assert prop.before.alert_rate > 0.5
    text = config_to_toml(cal.doc)
    assert '[payment_method.bank_transfer.rules.PAYMENT_TIMEOUT]\nthreshold = "' in text

    labels = load_labels(labels_path)
    shadow = shadow_backtest(
        lambda: open_lines(events),
        RulesConfig(),
        RulesConfig.from_dict(tomllib.loads(text)),
        hist,
        cal.proposals,
        labels=labels,
        blocklist=lambda: load_blocklist(bl),
    )
    # Its own shadow backtest: the bank transfers' rate falls below the budget...
    (seg,) = shadow.segments
    assert seg["current_rate"] > 0.5
    assert seg["proposed_rate"] < 0.01
    # ...and every injected payment anomaly of the other methods is still caught.
    methods = _methods(events)
    payment = [
        lab
        for lab in labels
        if RULES[lab["rule"]].category == "payment"
        and lab["order_id"] is not None
        and methods.get(lab["order_id"]) != "bank_transfer"
    ]
    assert len(payment) >= 30
    assert {lab["rule"] for lab in payment} >= {"PAYMENT_TIMEOUT", "PAYMENT_NOT_CONFIRMED", "PAYMENT_AMOUNT_MISMATCH"}
    missed = [lab for lab in payment if (lab["rule"], lab["subject"]) not in shadow.opened_proposed]
    assert missed == []
    assert shadow.lost_outside == []
    # What it gives up is inside its own segment: bank transfers left unpaid for hours.
    lost = [lab for lab in labels if lab["order_id"] in set(shadow.rules["PAYMENT_TIMEOUT"].lost)]
    assert all(methods[lab["order_id"]] == "bank_transfer" for lab in lost)
    assert seg["lost_labelled"] == len(shadow.rules["PAYMENT_TIMEOUT"].lost)
    # Nothing else moved: every other rule raises the same exceptions under both configs.
    for code, r in shadow.rules.items():
        if code != "PAYMENT_TIMEOUT":
            assert (r.current, r.caught_current, r.lost) == (r.proposed, r.caught_proposed, []), code
    pt = shadow.rules["PAYMENT_TIMEOUT"]
    assert pt.proposed < pt.current / 10


@pytest.mark.slow
def test_calibrate_cli_writes_the_toml_the_json_and_the_comparison(
    slow_history: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml_path, json_path = tmp_path / "proposed.toml", tmp_path / "cal.json"
    argv = ["calibrate", str(slow_history["events"]), "--blocklist", str(slow_history["blocklist"])]
    argv += ["--labels", str(slow_history["labels"]), "--budget", "1%", "-o", str(toml_path), "--json", str(json_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "payment_method=bank_transfer" in printed
    assert "shadow backtest: current vs proposed" in printed
    cfg = RulesConfig.load(toml_path)
    assert cfg.profile(payment_method="bank_transfer")["PAYMENT_TIMEOUT"] >= 3 * D
    assert cfg.profile(payment_method="card")["PAYMENT_TIMEOUT"] == 30 * MIN
    doc = json.loads(json_path.read_text())
    assert doc["mode"] == "budget" and doc["limit"] == 0.01
    assert doc["shadow"]["segments"][0]["proposed_rate"] < 0.01
    assert any(d["rule"] == "PAYMENT_TIMEOUT" and d["value"] == "bank_transfer" for d in doc["distributions"])


@pytest.mark.slow
def test_calibrate_proposes_nothing_for_a_healthy_history(tmp_path: Path) -> None:
    out, labels, bl = tmp_path / "s.jsonl", tmp_path / "l.jsonl", tmp_path / "b.jsonl"
    simulate(orders=3000, seed=11, output=out, labels=labels, blocklist=bl, payment_methods=True)
    cal = calibrate(measure(open_lines(out), blocklist=load_blocklist(bl)), budget=0.01)
    assert cal.proposals == []
    assert config_to_toml(cal.doc).strip() == ""


# -- the proposal logic on hand-built histories --------------------------------------------------------
def _history(groups: list[tuple[dict[str, str], str, list[float]]]) -> History:
    """Orders with the given segments; each gets one episode of `rule` with the given duration."""
    hist = History()
    n = 0
    for seg, rule, durations in groups:
        for dur in durations:
            n += 1
            oid = f"o-{n}"
            hist.orders[oid] = [seg.get("merchant"), seg.get("channel", "web"), seg.get("payment_method"), "DE", None]
            hist.episodes.setdefault(rule, []).append((oid, dur))
    return hist


def test_a_concentrated_segment_is_fixed_once_not_per_merchant() -> None:
    fast = [60.0 + i for i in range(900)]
    slow = [2 * D + i * 100 for i in range(200)]
    groups = [({"merchant": f"m-{k}", "payment_method": "card"}, "PAYMENT_TIMEOUT", fast[k::4]) for k in range(4)] + [
        ({"merchant": f"m-{k}", "payment_method": "bank"}, "PAYMENT_TIMEOUT", slow[k::4]) for k in range(4)
    ]
    cal = calibrate(_history(groups), budget=0.01, min_orders=50)
    assert [(p.scope, p.value) for p in cal.proposals] == [("payment_method", "bank")]
    (p,) = cal.proposals
    # The smallest grid value at or above the largest bank duration (2d + 19,900 s).
    assert p.proposed == min(g for g in GRID if g >= 2 * D + 199 * 100)
    assert p.after.alerts == 0


def test_the_budget_counts_chance_before_it_proposes() -> None:
    # 1.5 % late in a segment of 400 orders: over 1 %, but not beyond chance (3 sigma).
    durations = [60.0] * 394 + [2 * H] * 6
    cal = calibrate(_history([({"payment_method": "card"}, "PAYMENT_TIMEOUT", durations)]), budget=0.01)
    assert cal.proposals == []


def test_quantile_mode_covers_the_quantile_of_cleared_episodes() -> None:
    durations = [float(m * 60) for m in range(1, 201)]  # 1..200 minutes, all cleared
    hist = _history([({"merchant": "m-1"}, "CANCEL_NOT_PROCESSED", durations)])
    cal = calibrate(hist, quantile=0.95, min_orders=50)
    (p,) = cal.proposals
    assert p.scope == "*"  # one segment only: the whole population, i.e. [rules.X]
    assert p.proposed == 190 * 60  # the 95th of 200 cleared episodes, on the grid
    assert p.after.late_share <= 0.05


def test_never_cleared_episodes_are_a_process_problem_not_a_threshold() -> None:
    durations = [60.0] * 300 + [math.inf] * 100
    cal = calibrate(_history([({"merchant": "m-1"}, "REFUND_OVERDUE", durations)]), budget=0.01)
    assert cal.proposals == []
    assert {(s.rule, s.scope) for s in cal.unfixable} >= {("REFUND_OVERDUE", "*"), ("REFUND_OVERDUE", "merchant")}


def test_a_stronger_scope_in_the_current_config_is_respected() -> None:
    slow = [2 * D] * 200
    hist = _history([({"merchant": "m-9", "payment_method": "bank"}, "PAYMENT_TIMEOUT", slow)])
    current = {"merchant": {"m-9": {"rules": {"PAYMENT_TIMEOUT": {"threshold": "45m"}}}}}
    cal = calibrate(hist, current, budget=0.01, min_orders=50)
    # A payment-method override could not beat the merchant's own: the merchant's is raised.
    assert [(p.scope, p.value) for p in cal.proposals] == [("merchant", "m-9")]
    assert cal.doc["merchant"]["m-9"]["rules"]["PAYMENT_TIMEOUT"]["threshold"] == "2d"


def test_small_segments_are_left_alone() -> None:
    hist = _history([({"payment_method": "rare"}, "PAYMENT_TIMEOUT", [3 * D] * 20)])
    assert calibrate(hist, budget=0.01, min_orders=100).proposals == []


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({}, "exactly one"),
        ({"budget": 0.01, "quantile": 0.9}, "exactly one"),
        ({"budget": 1.5}, "fraction of orders"),
        ({"quantile": 0.0}, "quantile is in"),
    ],
)
def test_calibrate_rejects_bad_goals(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        calibrate(History(), **kw)


def test_the_written_toml_loads_back_to_the_same_profiles() -> None:
    doc = {
        "amount_tolerance": 0.05,
        "rules": {"PAYMENT_TIMEOUT": {"threshold": "45m"}, "ADDRESS_CLUSTER": {"min_orders": 6}},
        "merchant": {"shop with space": {"rules": {"PAYMENT_TIMEOUT": {"enabled": False}}}},
        "payment_method": {"bank_transfer": {"rules": {"PAYMENT_TIMEOUT": {"threshold": 4 * D}}}},
        "carrier": {"dhl": {"rules": {"TRACKING_STALLED": {"threshold": "5d"}}}},
    }
    text = config_to_toml(doc, ["a header"])
    assert text.startswith("# a header\n")
    back = RulesConfig.from_dict(tomllib.loads(text))
    want = RulesConfig.from_dict(doc)
    for key in [(), ("shop with space",), (None, None, "bank_transfer"), (None, None, None, None, "dhl")]:
        assert back.profile(*key) == want.profile(*key)
    assert back.params["ADDRESS_CLUSTER"]["min_orders"] == 6


@pytest.mark.parametrize(
    ("seconds", "config", "human"),
    [
        (45.0, "45s", "45s"),
        (90 * MIN, "90m", "1h30m"),
        (36 * H, "36h", "1d12h"),
        (4 * D, "4d", "4d"),
        (61.5, "61.5s", "1m02s"),
    ],
)
def test_durations_are_written_for_the_config_and_for_people(seconds: float, config: str, human: str) -> None:
    assert format_duration(seconds) == config
    assert human_duration(seconds) == human
    assert human_duration(math.inf) == "never"


# -- measuring: the detectors' own episodes ------------------------------------------------------------
def _write(path: Path, events: list[Any], extra: list[str] = ()) -> Path:  # type: ignore[assignment]
    lines = [ev.model_dump_json(by_alias=True) for ev in events] + list(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_measure_times_each_episode_to_its_clearing_event(tmp_path: Path) -> None:
    events = [
        created("o-1", T0, payment_method="card"),
        paid("o-1", at(7)),
        created("o-2", at(1), payment_method="bank_transfer"),
        paid("o-2", at(days=2, minutes=1)),
        created("o-3", at(2)),
        cancelled("o-3", at(hours=3, minutes=2)),  # cancelled unpaid: the cancellation clears it
        created("o-4", at(3)),
        status("o-4", at(4), "paid"),
    ]
    events.sort(key=lambda ev: ev.time)
    path = _write(tmp_path / "h.jsonl", events, ["{not json", json.dumps(raw("order.created", "o-x", T0, {}))])
    hist = measure(open_lines(path))
    got = {oid: dur for oid, dur in hist.episodes["PAYMENT_TIMEOUT"]}
    assert got["o-1"] == pytest.approx(7 * MIN, abs=1)
    assert got["o-2"] == pytest.approx(2 * D, abs=1)
    assert got["o-3"] == pytest.approx(3 * H, abs=1)
    assert hist.orders["o-2"][2] == "bank_transfer"
    assert hist.orders["o-1"][3] == "DE"
    assert hist.invalid == 2


def test_calibrate_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(tmp_path / "missing.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["calibrate", "-"]) == 1
    assert "not standard input" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl.gz"
    whole = gzip.compress(b"".join(b'{"n": %d}\n' % (i * 7919 % 100_003) for i in range(20_000)))
    broken.write_bytes(whole[: len(whole) // 2])  # truncated mid-stream
    assert main(["calibrate", str(broken), "--no-shadow"]) == 1
    assert "cannot read" in capsys.readouterr().err
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text('[country.de.rules.PAYMENT_TIMEOUT]\nthreshold = "1h"\n')
    ok = _write(tmp_path / "ok.jsonl", [created("o-1", T0)])
    assert main(["calibrate", str(ok), "--config", str(bad_cfg)]) == 2
    for bad in (["--budget", "150%"], ["--budget", "x"], ["--quantile", "1"], ["--min-orders", "0"]):
        with pytest.raises(SystemExit) as info:
            main(["calibrate", str(ok), *bad])
        assert info.value.code == 2


def test_calibrate_cli_on_a_tiny_or_hostile_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = [json.dumps(raw("order.created", "o-1", T0, {"order_id": ["x"], "shipping_address": 5}))]
    hostile += ["", "[]", '"order.created"', "x" * 100_000]
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(hostile) + "\n")
    assert main(["calibrate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "none: every segment is within the limit" in out


def test_the_sniffer_keeps_only_segment_values_a_config_could_name() -> None:
    data = {"order_id": "o-1", "merchant_id": "m" * 129, "channel": 7, "payment_method": "", "shipping_address": []}
    lines = [
        json.dumps(raw("order.created", "o-1", T0, data)).encode(),
        json.dumps(raw("shipment.created", "o-1", T0, {"order_id": "o-1", "carrier": "dhl"})).encode(),
        json.dumps(raw("order.status_changed", "o-1", T0, {"order_id": "o-1", "status": "delivered"})).encode(),
        b'{"type": "order.created", "data": {"order_id": ["x"]}}',
        b'"order.created"',
    ]
    hist = History()
    assert list(SegmentSniffer(lines, hist)) == lines  # every line passes through untouched
    assert hist.orders == {"o-1": [None, None, None, None, "dhl"]}
    assert hist.terminal == {"o-1": T0.timestamp()}
