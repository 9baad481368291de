"""deploy/prometheus/rules.yml: promtool accepts it and its unit tests pass, every alert has a
summary, a severity and a runbook section that exists; the dashboards use variables, not a
datasource uid; the helpers the live test relies on do what they say."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.prometheus import require_binary
from tests.deploy.queries import (
    RULES,
    as_bool,
    dashboards,
    fill_variables,
    panel_queries,
    rules,
    signal,
    test_rules_copy,
)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    out = subprocess.run(
        [require_binary("promtool"), "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_would_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests bite: with the dead-letter threshold raised tenfold they fail."""
    changed = RULES.read_text().replace(
        "rate(orderwatch_events_invalid_total[5m])) > 0.1", "rate(orderwatch_events_invalid_total[5m])) > 10"
    )
    assert changed != RULES.read_text()
    (tmp_path / "rules.yml").write_text(changed)
    (tmp_path / "tests.yml").write_text((RULES.parent / "tests.yml").read_text())
    out = subprocess.run(
        [require_binary("promtool"), "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "OrderwatchDeadLetters" in out.stdout + out.stderr


def test_every_alert_is_documented_and_labelled() -> None:
    runbook = RUNBOOK.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    alerts = [r for r in rules() if r.alert]
    assert len(alerts) == 14
    for alert in alerts:
        assert alert.labels["severity"] in {"page", "ticket"}, alert.name
        assert alert.annotations["summary"] and alert.annotations["description"], alert.name
        url = alert.annotations["runbook_url"]
        assert url == f"docs/runbook.md#{alert.name.lower()}", alert.name
        assert alert.name.lower() in anchors, f"docs/runbook.md has no section {alert.name}"


def test_test_copy_changes_timing_only(tmp_path: Path) -> None:
    copy = rules(test_rules_copy(tmp_path / "rules.yml"))
    original = rules()
    assert [(r.name, r.expr, r.labels, r.annotations) for r in copy] == [
        (r.name, r.expr, r.labels, r.annotations) for r in original
    ]
    text = (tmp_path / "rules.yml").read_text()
    assert "for: 0s" in text and "interval: 1s" in text


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up == 0", "up == bool 0"),
        ('sum by (topic) (x{a!="b", c=~"d"}) > 0.1', 'sum by (topic) (x{a!="b", c=~"d"}) > bool 0.1'),
        ("a > 10 * b and a > 0.05", "a > bool 10 * b and a > bool 0.05"),
        ('x{l="a>b"} >= 2', 'x{l="a>b"} >= bool 2'),
        ("a > bool 1", "a > bool 1"),
        ("(time() - t) > 300", "(time() - t) > bool 300"),
    ],
)
def test_as_bool(expr: str, expected: str) -> None:
    assert as_bool(expr) == expected


def test_signal_of_absent_is_what_it_watches() -> None:
    assert signal("absent(orderwatch_consumer_lag_messages)") == "orderwatch_consumer_lag_messages"
    assert signal("absent(up == 1)") == "up == bool 1"
    assert signal("up == 0") == "up == bool 0"


def test_dashboards_use_variables_not_uids() -> None:
    for name, doc in dashboards().items():
        names = [v["name"] for v in doc["templating"]["list"]]
        assert names[0] == "datasource" and "instance" in names, name
        if "business" in name:
            assert "rule" in names
        for panel in doc["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert '$instance"' in target["expr"] or "instance=~" in target["expr"], target["expr"]
    queries = panel_queries()
    assert len(queries) >= 30
    for q in queries:
        assert "$" not in fill_variables(q.expr).replace("$1", "")


def test_fill_variables_refuses_an_unknown_variable() -> None:
    with pytest.raises(ValueError, match="unknown template variable"):
        fill_variables('rate(x{job="$job"}[5m])')
