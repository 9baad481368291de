"""The `[actions]` policy: defaults for every action code, overrides from the handlers TOML file,
and a ConfigError naming the key for every bad value."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import ConfigError
from orderwatch.handlers.policy import ACTION_CODES, ActionPolicy, load_policy

MONEY_OUT = ("refund_duplicate_payment", "retry_refund", "expedite_refund")
NEEDS_A_PERSON = (
    "block_refund_and_review",
    "hold_orders_for_review",
    "replenish_or_cancel",
    "intercept_shipment",
    "blocklist_customer",
    "blocklist_address",
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "handlers.toml"
    path.write_text(text)
    return path


def test_defaults_cover_every_catalog_action_and_the_blocklist_actions() -> None:
    policy = load_policy(None)
    expected = {r.action for r in RULES.values()} | {"blocklist_customer", "blocklist_address"}
    assert set(policy.rules) == expected == set(ACTION_CODES)
    assert all(rule.max_attempts == 3 for rule in policy.rules.values())


def test_default_modes_money_under_a_cap_holds_and_blocks_need_approval_the_rest_runs() -> None:
    policy = ActionPolicy.default()
    for code in MONEY_OUT:
        assert (policy.rule(code).mode, policy.rule(code).max_amount) == ("auto", Decimal("50.00")), code
    for code in NEEDS_A_PERSON:
        assert policy.rule(code).mode == "approval", code
    for code in ("remind_customer_to_pay", "contact_carrier", "notify_customer_delay", "check_inventory_sync"):
        assert (policy.rule(code).mode, policy.rule(code).max_amount) == ("auto", None), code


def test_an_action_code_the_policy_does_not_know_waits_for_approval() -> None:
    assert ActionPolicy.default().rule("launch_rocket").mode == "approval"


def test_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[escalation]
level_2_factor = 2  # another section: not the policy's business

[actions.retry_refund]
mode = "approval"

[actions.refund_duplicate_payment]
max_amount = "120.50"
max_attempts = 5

[actions.expedite_refund]
max_amount = 20

[actions.contact_carrier]
mode = "off"

[actions.replenish_or_cancel]
max_amount = "None"
""",
    )
    policy = load_policy(path)
    assert policy.rule("retry_refund").mode == "approval"
    assert policy.rule("retry_refund").max_amount == Decimal("50.00")  # kept from the defaults
    dup = policy.rule("refund_duplicate_payment")
    assert (dup.mode, dup.max_amount, dup.max_attempts) == ("auto", Decimal("120.50"), 5)
    assert policy.rule("expedite_refund").max_amount == Decimal("20")
    assert policy.rule("contact_carrier").mode == "off"
    assert policy.rule("hold_orders_for_review").mode == "approval"
    assert policy.rule("replenish_or_cancel").max_amount is None


def test_none_removes_a_refund_cap(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, '[actions.retry_refund]\nmax_amount = "none"'))
    assert (policy.rule("retry_refund").mode, policy.rule("retry_refund").max_amount) == ("auto", None)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[actions.retry_refund]\nmode = "yes"',
            "handlers config [actions.retry_refund] mode: expected one of auto, approval, off, got 'yes'",
        ),
        (
            '[actions.refund_duplicate_payment]\nmax_amount = "lots"',
            "handlers config [actions.refund_duplicate_payment] max_amount: expected a decimal amount >= 0",
        ),
        (
            '[actions.refund_duplicate_payment]\nmax_amount = "-1"',
            "handlers config [actions.refund_duplicate_payment] max_amount: expected a decimal amount >= 0",
        ),
        (
            "[actions.expedite_refund]\nmax_amount = true",
            "handlers config [actions.expedite_refund] max_amount: expected a decimal amount >= 0",
        ),
        (
            "[actions.contact_carrier]\nmax_attempts = 0",
            "handlers config [actions.contact_carrier] max_attempts: expected an integer >= 1, got 0",
        ),
        (
            '[actions.contact_carrier]\nmax_attempts = "3"',
            "handlers config [actions.contact_carrier] max_attempts: expected an integer >= 1, got '3'",
        ),
        (
            '[actions.contact_carrier]\ncolour = "red"',
            "handlers config [actions.contact_carrier] colour: unknown key; expected one of mode, max_amount, "
            "max_attempts",
        ),
        (
            '[actions.refund_everything]\nmode = "auto"',
            "handlers config [actions.refund_everything]: unknown action code; expected one of ",
        ),
        ('[actions]\nretry_refund = "auto"', "handlers config [actions] retry_refund: expected a table"),
        ('actions = "auto"', "handlers config [actions]: expected a table of action codes, got 'auto'"),
    ],
)
def test_each_bad_value_is_a_config_error_naming_its_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_policy(_write(tmp_path, toml))
    assert str(err.value).startswith(message)


def test_unknown_action_code_error_lists_the_known_codes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="retry_refund") as err:
        load_policy(_write(tmp_path, '[actions.refund_everything]\nmode = "auto"'))
    assert all(code in str(err.value) for code in ACTION_CODES)


def test_unreadable_or_broken_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot be read"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(_write(tmp_path, "[actions.retry_refund\nmode ="))
