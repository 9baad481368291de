"""What the real-Prometheus test evaluates: every panel query of the committed dashboards (with
the template variables as Grafana's "All" would fill them), every rule of deploy/prometheus, and
the rules file the test server loads (the same expressions, test timing)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = ("orderwatch-sre.json", "orderwatch-business.json")

# What Grafana puts in place of each variable for "All" (allValue) and the rate window it
# computes for a 1 s scrape interval (4 x scrape interval, at least 1m in practice).
VARIABLES = {"$instance": ".*", "$rule": ".*", "$__rate_interval": "1m"}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # as in the JSON

    @property
    def evaluated(self) -> str:
        return fill_variables(self.expr)


@dataclass(frozen=True)
class RuleExpr:
    group: str
    name: str  # alert or record name
    expr: str
    alert: bool
    labels: dict[str, str]
    annotations: dict[str, str]


def fill_variables(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    if "$" in expr.replace("$1", ""):
        msg = f"unknown template variable left in {expr!r}"
        raise ValueError(msg)
    return expr


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((GRAFANA / name).read_text()) for name in DASHBOARDS}


def panel_queries() -> list[PanelQuery]:
    out = []
    for doc in dashboards().values():
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                out.append(PanelQuery(doc["title"], panel["title"], target["refId"], target["expr"]))
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard, variable, label_values(...) query) of every query variable."""
    return [
        (doc["title"], var["name"], var["definition"])
        for doc in dashboards().values()
        for var in doc["templating"]["list"]
        if var["type"] == "query"
    ]


def rules(path: Path = RULES) -> list[RuleExpr]:
    doc = yaml.safe_load(path.read_text())
    return [
        RuleExpr(
            group["name"],
            rule.get("alert") or rule["record"],
            rule["expr"],
            "alert" in rule,
            rule.get("labels", {}),
            rule.get("annotations", {}),
        )
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def test_rules_copy(dest: Path, *, interval: str = "1s") -> Path:
    """rules.yml with test timing only: every group evaluated each `interval`, every `for` 0s.
    The expressions are byte for byte the committed ones."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = interval
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


test_rules_copy.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def signal(expr: str) -> str:
    """What an alert looks at, as an expression that returns series whether it fires or not: the
    `bool` form (below), and for `absent(X)` (which returns nothing while X exists) X itself."""
    m = re.fullmatch(r"\s*absent\((.*)\)\s*", expr, re.S)
    return as_bool(m.group(1) if m else expr)


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def as_bool(expr: str) -> str:
    """The expression with every comparison given the `bool` modifier: instead of keeping the
    series that pass, it returns all of them with 0 or 1, so an alert that does not fire still
    shows that its metrics exist and its label matching joins. Label matchers ({a!="x"}) and
    strings are left alone."""
    out = []
    depth = 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == '"':
            end = expr.index('"', i + 1)
            while expr[end - 1] == "\\":
                end = expr.index('"', end + 1)
            out.append(expr[i : end + 1])
            i = end + 1
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            m = _COMPARISON.match(expr, i)
            if m:
                out.append(m.group(1) + " bool")
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)
