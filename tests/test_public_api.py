"""The public API, pinned: what a user of the installed package can import and run.

A change here is a change for users (a release note, maybe a deprecation), so it must be made on
purpose: this test fails on any name added to or removed from a public package, and on any
module loaded outside the `orderwatch` namespace.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import orderwatch
from orderwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = {
    "orderwatch.schemas": {
        "EVENT_MODELS",
        "EVENT_TYPES",
        "INPUT_TOPICS",
        "TOPIC_OF_TYPE",
        "Address",
        "CloudEvent",
        "Event",
        "ExceptionData",
        "ExceptionEvent",
        "LineItem",
        "Resolution",
        "parse_event",
    },
    "orderwatch.detectors": {
        "RULES",
        "Blocklist",
        "Emission",
        "Engine",
        "EventTimeReplay",
        "ExceptionRecord",
        "Rule",
        "RulesConfig",
        "to_cloudevent",
    },
    "orderwatch.review": {"DIMENSIONS", "GROUPS", "Analytics", "CaseSet", "Period", "read_case_set"},
    "orderwatch.errors": {
        "CaseNotFound",
        "ConfigError",
        "DeliveryError",
        "HandlerError",
        "InputError",
        "InvalidEvent",
        "OrderwatchError",
        "StoreUnavailable",
        "TransitionError",
    },
}

COMMANDS = {
    "backtest",
    "simulate",
    "schema",
    "publish",
    "worker",
    "topics",
    "handlers-config",
    "demo",
    "rules",
    "calibrate",
    "report",
}

# The design's folders, installed only as sub-packages of orderwatch.
FOLDERS = ("schemas", "detectors", "streams", "handlers")


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name


def test_command_line_is_pinned() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == COMMANDS


def test_distribution_installs_only_the_orderwatch_namespace() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = tool["packages"]
    assert all(p == "orderwatch" or p.startswith("orderwatch.") for p in packages)
    # every package on disk is listed, so none is silently left out of the wheel
    on_disk = {"orderwatch"} | {
        name for _, name, ispkg in pkgutil.walk_packages(orderwatch.__path__, "orderwatch.") if ispkg
    }
    assert on_disk == set(packages)
    for folder in FOLDERS:
        assert (ROOT / "orderwatch" / folder).resolve() == (ROOT / folder).resolve()


def test_importing_everything_loads_no_module_outside_the_namespace() -> None:
    """Run from a folder without the source tree on sys.path, as an installed user would."""
    code = (
        "import importlib, pkgutil, sys, orderwatch;"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(orderwatch.__path__, 'orderwatch.')];"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FOLDERS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
