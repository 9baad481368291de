"""Handlers config sections: defaults, valid values, and errors that name the key and what it expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderwatch.errors import ConfigError
from orderwatch.handlers.config import (
    EscalationConfig,
    HandlersConfig,
    IncidentConfig,
    load_handlers_config,
    load_section,
)


def test_defaults_when_absent() -> None:
    cfg = HandlersConfig.from_toml({})
    assert cfg.escalation == EscalationConfig(enabled=True, level_2_factor=2.0)
    assert cfg.incidents.threshold == 3
    assert cfg.incidents.window_minutes == 30
    assert cfg.incidents.dimensions == ["carrier", "provider", "warehouse_id", "sku"]
    assert load_handlers_config(None) == HandlersConfig()


def test_values_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "handlers.toml"
    path.write_text(
        "[escalation]\nlevel_2_factor = 3\nenabled = false\n\n"
        '[incidents]\nwindow_minutes = 10.5\nthreshold = 5\ndimensions = ["carrier"]\n\n'
        '[actions.contact_carrier]\nmode = "off"\n\n'
        '[[webhooks]]\nname = "ops"\nurl = "https://hooks.example.org/T0/B0/secret-token"\n'
    )
    cfg = load_handlers_config(path)
    assert cfg.escalation == EscalationConfig(enabled=False, level_2_factor=3.0)
    assert cfg.incidents == IncidentConfig(window_minutes=10.5, threshold=5, dimensions=["carrier"])
    # one loader, every section
    assert cfg.actions.rule("contact_carrier").mode == "off"
    assert [c.name for c in cfg.webhooks] == ["ops"]
    shown = cfg.describe()
    assert shown["webhooks"][0]["url"] == "https://hooks.example.org/..."
    assert "secret-token" not in str(shown)
    assert shown["actions"]["contact_carrier"]["mode"] == "off"


def test_an_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        HandlersConfig.from_toml({"webhook": [{"name": "x", "url": "http://x"}]})
    assert str(err.value) == (
        "handlers config [webhook]: unknown section, expected one of escalation, incidents, actions, webhooks, owners"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"incidents": {"threshold": 1}}, "handlers config [incidents] threshold: expected an integer >= 2, got 1"),
        ({"incidents": {"threshold": "3"}}, "handlers config [incidents] threshold: expected an integer >= 2, got '3'"),
        (
            {"incidents": {"window_minutes": 0}},
            "handlers config [incidents] window_minutes: expected a number > 0, got 0",
        ),
        (
            {"escalation": {"level_2_factor": "x"}},
            "handlers config [escalation] level_2_factor: expected a number > 1, got 'x'",
        ),
        (
            {"escalation": {"level_2_factor": 1}},
            "handlers config [escalation] level_2_factor: expected a number > 1, got 1",
        ),
        ({"escalation": {"enabled": "yes"}}, "handlers config [escalation] enabled: expected true or false, got 'yes'"),
        (
            {"incidents": {"dimensions": ["carrier", "colour"]}},
            "handlers config [incidents] dimensions: expected a list of 'carrier', 'provider', 'warehouse_id' or "
            "'sku', got ['carrier', 'colour']",
        ),
        (
            {"incidents": {"treshold": 3}},
            "handlers config [incidents] treshold: unknown key, expected one of window_minutes, threshold, dimensions",
        ),
        ({"escalation": [1]}, "handlers config [escalation]: expected a table, got [1]"),
    ],
)
def test_errors_name_the_key_and_the_expected_value(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        HandlersConfig.from_toml(doc)
    assert str(err.value) == message


def test_load_section_with_any_model() -> None:
    assert load_section({"incidents": {"threshold": 7}}, "incidents", IncidentConfig).threshold == 7


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_handlers_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[escalation\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_handlers_config(bad)


EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "handlers.example.toml"


def test_the_shipped_example_loads_and_sets_every_key() -> None:
    import tomllib

    from orderwatch.handlers.notify import Channel
    from orderwatch.handlers.policy import ActionRule

    cfg = load_handlers_config(EXAMPLE)
    doc = tomllib.loads(EXAMPLE.read_text())
    # every key each section knows appears in the example at least once: it documents them all
    assert set(doc["escalation"]) == set(EscalationConfig.model_fields)
    assert set(doc["incidents"]) == set(IncidentConfig.model_fields)
    assert set().union(*(set(t) for t in doc["actions"].values())) == set(ActionRule.model_fields)
    assert set().union(*(set(t) for t in doc["webhooks"])) == set(Channel.model_fields)
    assert [c.name for c in cfg.webhooks] == ["ops-slack", "audit"]
    assert cfg.actions.rule("contact_carrier").max_attempts == 5


def test_handlers_config_command_prints_the_effective_settings_without_secrets(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    from orderwatch.cli import main

    assert main(["handlers-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert set(shown) == {"escalation", "incidents", "actions", "webhooks", "owners"}
    assert shown["webhooks"][0]["url"] == "https://hooks.slack.com/..."
    assert shown["webhooks"][0]["headers"] == ["Authorization"]
    assert shown["actions"]["refund_duplicate_payment"]["max_amount"] == "50.00"
    assert "XXXXXXXX" not in out and "replace-me" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[webhooks]]\nname = "x"\nurl = "ftp://example.org"\n')
    assert main(["handlers-config", str(bad)]) == 2
    assert "[[webhooks]] 'x' url: expected an http:// or https:// URL" in capsys.readouterr().err
