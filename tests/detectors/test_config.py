"""Rule configuration: RULES.md defaults, the TOML file, merchant > channel > default, and
errors that name the full key path and what was expected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import DEFAULT_THRESHOLDS, GLOBAL_PARAMS, RulesConfig
from orderwatch.errors import ConfigError, OrderwatchError
from tests.factories import T0, at, created, opened, paid, run

MIN = 60.0
HOUR = 3600.0
DAY = 86400.0


def load(tmp_path: Path, text: str) -> RulesConfig:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return RulesConfig.load(path)


# -- defaults ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "seconds"),
    [
        ("PAYMENT_NOT_CONFIRMED", 5 * MIN),
        ("PAYMENT_TIMEOUT", 30 * MIN),
        ("PAYMENT_AMOUNT_MISMATCH", 10 * MIN),
        ("PAYMENT_WITHOUT_ORDER", 10 * MIN),
        ("STOCK_NOT_RESERVED", 15 * MIN),
        ("SHIPMENT_NOT_CREATED", 48 * HOUR),
        ("TRACKING_STALLED", 3 * DAY),
        ("DUPLICATE_ORDER", 10 * MIN),
        ("CANCEL_NOT_PROCESSED", 30 * MIN),
        ("REFUND_OVERDUE", 24 * HOUR),
        ("ORDER_STUCK", 7 * DAY),
    ],
)
def test_default_thresholds_match_rules_md(rule: str, seconds: float) -> None:
    cfg = RulesConfig()
    assert cfg.thresholds[rule] == seconds
    assert cfg.profile()[rule] == seconds
    assert cfg.profile("m-unknown", "web")[rule] == seconds


@pytest.mark.parametrize(
    ("rule", "params"),
    [
        ("ADDRESS_CLUSTER", {"window": 24 * HOUR, "min_orders": 5, "min_customers": 3}),
        ("NEW_ACCOUNT_BURST", {"account_age": 7 * DAY, "window": 1 * HOUR, "min_orders": 5}),
        ("PAYMENT_FAILURE_SPIKE", {"window": 5 * MIN, "min_failures": 20, "min_rate": 0.30}),
    ],
)
def test_default_window_parameters_match_rules_md(rule: str, params: dict[str, float]) -> None:
    assert RulesConfig().params[rule] == params


def test_defaults_enable_every_rule_and_use_a_cent_of_tolerance() -> None:
    cfg = RulesConfig()
    assert set(cfg.enabled) == set(RULES)
    assert len(RULES) == 24
    assert all(cfg.enabled.values())
    assert all(cfg.profile()[code] is not None for code in RULES)
    assert cfg.amount_tolerance == 0.01
    # DELIVERY_OVERDUE's deadline is the promise itself: it has no threshold of its own
    assert "DELIVERY_OVERDUE" not in DEFAULT_THRESHOLDS


def test_defaults_are_not_shared_between_instances() -> None:
    a = RulesConfig()
    a.thresholds["PAYMENT_TIMEOUT"] = 1.0
    a.params["ADDRESS_CLUSTER"]["min_orders"] = 99
    b = RulesConfig()
    assert b.thresholds["PAYMENT_TIMEOUT"] == 30 * MIN
    assert b.params["ADDRESS_CLUSTER"]["min_orders"] == 5
    assert GLOBAL_PARAMS["ADDRESS_CLUSTER"]["min_orders"] == 5


# -- the TOML file -----------------------------------------------------------------------------
def test_load_reads_durations_in_every_form(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
        amount_tolerance = 0.05
        [rules.PAYMENT_TIMEOUT]
        threshold = "45m"
        [rules.SHIPMENT_NOT_CREATED]
        threshold = "72h"
        [rules.TRACKING_STALLED]
        threshold = "3d"
        [rules.CANCEL_NOT_PROCESSED]
        threshold = 90
        [rules.REFUND_OVERDUE]
        threshold = 5400.5
        [rules.ORDER_STUCK]
        threshold = "2w"
        [rules.STOCK_NOT_RESERVED]
        threshold = "1.5h"
        [rules.PAYMENT_NOT_CONFIRMED]
        threshold = "30s"
        [rules.ADDRESS_CLUSTER]
        window = "12h"
        min_orders = 8
        min_customers = 4
        [rules.PAYMENT_FAILURE_SPIKE]
        min_rate = 0.5
        [rules.DELIVERY_FAILED]
        enabled = false
    """,
    )
    assert cfg.thresholds["PAYMENT_TIMEOUT"] == 45 * MIN
    assert cfg.thresholds["SHIPMENT_NOT_CREATED"] == 72 * HOUR
    assert cfg.thresholds["TRACKING_STALLED"] == 3 * DAY
    assert cfg.thresholds["CANCEL_NOT_PROCESSED"] == 90.0
    assert cfg.thresholds["REFUND_OVERDUE"] == 5400.5
    assert cfg.thresholds["ORDER_STUCK"] == 14 * DAY
    assert cfg.thresholds["STOCK_NOT_RESERVED"] == 90 * MIN
    assert cfg.thresholds["PAYMENT_NOT_CONFIRMED"] == 30.0
    assert cfg.params["ADDRESS_CLUSTER"] == {"window": 12 * HOUR, "min_orders": 8, "min_customers": 4}
    assert cfg.params["PAYMENT_FAILURE_SPIKE"]["min_rate"] == 0.5
    assert cfg.params["PAYMENT_FAILURE_SPIKE"]["min_failures"] == 20  # untouched
    assert cfg.amount_tolerance == 0.05
    assert cfg.enabled["DELIVERY_FAILED"] is False
    assert cfg.profile()["DELIVERY_FAILED"] is None
    # keys not in the file keep their defaults
    assert cfg.thresholds["PAYMENT_WITHOUT_ORDER"] == 10 * MIN
    assert cfg.profile()["PAYMENT_TIMEOUT"] == 45 * MIN


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.thresholds == RulesConfig().thresholds
    assert cfg.profile() == RulesConfig().profile()


LAYERED = """
    [rules.PAYMENT_TIMEOUT]
    threshold = "45m"
    [rules.CANCEL_NOT_PROCESSED]
    enabled = false

    [channel.marketplace.rules.PAYMENT_TIMEOUT]
    threshold = "2h"
    [channel.marketplace.rules.SHIPMENT_NOT_CREATED]
    threshold = "72h"
    [channel.app.rules.PAYMENT_TIMEOUT]
    enabled = false

    [merchant."m-42".rules.PAYMENT_TIMEOUT]
    threshold = "3h"
    [merchant."m-43".rules.PAYMENT_TIMEOUT]
    enabled = false
    [merchant."m-44".rules.PAYMENT_TIMEOUT]
    enabled = true
    [merchant."m-45".rules.CANCEL_NOT_PROCESSED]
    enabled = true
    [merchant."m-46".rules.CANCEL_NOT_PROCESSED]
    threshold = "1h"
"""


@pytest.mark.parametrize(
    ("merchant", "channel", "rule", "expected"),
    [
        # defaults (after the file's [rules] section)
        (None, None, "PAYMENT_TIMEOUT", 45 * MIN),
        ("m-1", "web", "PAYMENT_TIMEOUT", 45 * MIN),
        ("m-1", "web", "SHIPMENT_NOT_CREATED", 48 * HOUR),
        # channel beats defaults
        ("m-1", "marketplace", "PAYMENT_TIMEOUT", 2 * HOUR),
        (None, "marketplace", "SHIPMENT_NOT_CREATED", 72 * HOUR),
        ("m-1", "app", "PAYMENT_TIMEOUT", None),
        # merchant beats channel
        ("m-42", "marketplace", "PAYMENT_TIMEOUT", 3 * HOUR),
        ("m-42", "app", "PAYMENT_TIMEOUT", 3 * HOUR),
        ("m-42", None, "PAYMENT_TIMEOUT", 3 * HOUR),
        ("m-43", "marketplace", "PAYMENT_TIMEOUT", None),
        ("m-44", "app", "PAYMENT_TIMEOUT", 45 * MIN),  # re-enabled: the default threshold
        ("m-44", "marketplace", "PAYMENT_TIMEOUT", 2 * HOUR),  # enabled only: the channel's stays
        # a merchant override of one rule leaves the channel's other overrides alone
        ("m-42", "marketplace", "SHIPMENT_NOT_CREATED", 72 * HOUR),
        # merchant beats a rule disabled by default
        ("m-1", "web", "CANCEL_NOT_PROCESSED", None),
        ("m-45", "web", "CANCEL_NOT_PROCESSED", 30 * MIN),
        ("m-46", "web", "CANCEL_NOT_PROCESSED", 1 * HOUR),
    ],
)
def test_merchant_beats_channel_beats_defaults(
    tmp_path: Path, merchant: str | None, channel: str | None, rule: str, expected: float | None
) -> None:
    cfg = load(tmp_path, LAYERED)
    assert cfg.profile(merchant, channel)[rule] == expected


def test_profiles_are_independent(tmp_path: Path) -> None:
    cfg = load(tmp_path, LAYERED)
    first = cfg.profile("m-42", "marketplace")
    assert cfg.profile("m-1", "marketplace")["PAYMENT_TIMEOUT"] == 2 * HOUR
    assert cfg.profile("m-42", "marketplace") == first
    assert cfg.profile()["PAYMENT_TIMEOUT"] == 45 * MIN


def test_the_engine_uses_the_order_profile(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
        [merchant."m-42".rules.PAYMENT_TIMEOUT]
        threshold = "1h"
        [channel.pos.rules.PAYMENT_TIMEOUT]
        enabled = false
    """,
    )
    late_pay = 45  # minutes: after the default 30 min, before m-42's hour
    events = [
        created("o-default", T0),
        paid("o-default", at(late_pay)),
        created("o-m42", at(1), merchant_id="m-42"),
        paid("o-m42", at(1 + late_pay)),
        created("o-pos", at(2), channel="pos"),
        paid("o-pos", at(2 + late_pay)),
    ]
    ems = run(events, config=cfg, until=at(hours=3))
    assert sorted(e.record.order_id for e in opened(ems, "PAYMENT_TIMEOUT")) == ["o-default"]


# -- errors ------------------------------------------------------------------------------------
def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def _key(path: str) -> re.Pattern[str]:
    """The key path as the message may spell it: components joined by dots, quoted or not."""
    parts = [rf'"?{re.escape(p)}"?' for p in path.split(".")]
    return re.compile(r"\.".join(parts))


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        pytest.param(
            '[rules.NO_SUCH_RULE]\nthreshold = "5m"',
            "rules.NO_SUCH_RULE",
            ["unknown rule", "PAYMENT_TIMEOUT", "ORDER_STUCK"],
            id="unknown-rule",
        ),
        pytest.param(
            '[merchant."m-1".rules.NO_SUCH_RULE]\nenabled = false',
            "merchant.m-1.rules.NO_SUCH_RULE",
            ["unknown rule", "PAYMENT_TIMEOUT"],
            id="unknown-rule-per-merchant",
        ),
        pytest.param(
            "[channel.web.rules.NO_SUCH_RULE]\nenabled = false",
            "channel.web.rules.NO_SUCH_RULE",
            ["unknown rule"],
            id="unknown-rule-per-channel",
        ),
        pytest.param(
            '[rules.PAYMENT_TIMEOUT]\nthreshhold = "5m"',
            "rules.PAYMENT_TIMEOUT.threshhold",
            ["unknown", "enabled", "threshold"],
            id="unknown-key",
        ),
        pytest.param(
            "[rules.ADDRESS_CLUSTER]\nmin_order = 3",
            "rules.ADDRESS_CLUSTER.min_order",
            ["unknown", "min_orders", "min_customers", "window"],
            id="unknown-window-key",
        ),
        pytest.param(
            '[rules.DELIVERY_OVERDUE]\nthreshold = "1d"',
            "rules.DELIVERY_OVERDUE.threshold",
            ["unknown", "enabled"],
            id="threshold-of-a-rule-without-one",
        ),
        pytest.param(
            '[merchant."m-1".rules.PAYMENT_TIMEOUT]\nwindow = "1h"',
            "merchant.m-1.rules.PAYMENT_TIMEOUT.window",
            ["unknown", "enabled, threshold"],
            id="unknown-key-per-merchant",
        ),
        pytest.param(
            '[merchant."m-1"]\nthreshold = "1h"',
            "merchant.m-1.threshold",
            ["unknown", "rules"],
            id="unknown-merchant-section-key",
        ),
        pytest.param(
            "tolerance = 0.5", "tolerance", ["unknown", "rules", "merchant", "channel"], id="unknown-top-level-key"
        ),
        pytest.param(
            '[rules.PAYMENT_TIMEOUT]\nthreshold = "soon"',
            "rules.PAYMENT_TIMEOUT.threshold",
            ["'soon'", "duration", '"30m"'],
            id="bad-duration",
        ),
        pytest.param(
            '[rules.PAYMENT_TIMEOUT]\nthreshold = "30 minutes"',
            "rules.PAYMENT_TIMEOUT.threshold",
            ["'30 minutes'", "duration"],
            id="duration-spelled-out",
        ),
        pytest.param(
            "[rules.PAYMENT_TIMEOUT]\nthreshold = -5",
            "rules.PAYMENT_TIMEOUT.threshold",
            ["-5", "positive"],
            id="negative-seconds",
        ),
        pytest.param(
            '[rules.PAYMENT_TIMEOUT]\nthreshold = "-5m"',
            "rules.PAYMENT_TIMEOUT.threshold",
            ["'-5m'", "positive"],
            id="negative-duration",
        ),
        pytest.param(
            "[rules.PAYMENT_TIMEOUT]\nthreshold = 0", "rules.PAYMENT_TIMEOUT.threshold", ["0", "positive"], id="zero"
        ),
        pytest.param(
            "[rules.PAYMENT_TIMEOUT]\nthreshold = true",
            "rules.PAYMENT_TIMEOUT.threshold",
            ["True", "duration"],
            id="boolean-duration",
        ),
        pytest.param(
            '[channel.marketplace.rules.SHIPMENT_NOT_CREATED]\nthreshold = "-2d"',
            "channel.marketplace.rules.SHIPMENT_NOT_CREATED.threshold",
            ["'-2d'", "positive"],
            id="negative-per-channel",
        ),
        pytest.param(
            '[merchant."m-42".rules.PAYMENT_TIMEOUT]\nthreshold = "soon"',
            "merchant.m-42.rules.PAYMENT_TIMEOUT.threshold",
            ["'soon'", "duration"],
            id="bad-duration-per-merchant",
        ),
        pytest.param(
            '[rules.ADDRESS_CLUSTER]\nwindow = "soon"',
            "rules.ADDRESS_CLUSTER.window",
            ["'soon'", "duration"],
            id="bad-window",
        ),
        pytest.param(
            "[rules.ADDRESS_CLUSTER]\nmin_orders = 0",
            "rules.ADDRESS_CLUSTER.min_orders",
            ["whole number >= 1", "0"],
            id="zero-count",
        ),
        pytest.param(
            "[rules.NEW_ACCOUNT_BURST]\nmin_orders = 2.5",
            "rules.NEW_ACCOUNT_BURST.min_orders",
            ["whole number", "2.5"],
            id="fractional-count",
        ),
        pytest.param(
            "[rules.PAYMENT_FAILURE_SPIKE]\nmin_rate = 30",
            "rules.PAYMENT_FAILURE_SPIKE.min_rate",
            ["fraction", "30"],
            id="rate-as-percent",
        ),
        pytest.param(
            '[rules.PAYMENT_TIMEOUT]\nenabled = "yes"',
            "rules.PAYMENT_TIMEOUT.enabled",
            ["true or false", "'yes'"],
            id="enabled-yes",
        ),
        pytest.param(
            '[merchant."m-1".rules.PAYMENT_TIMEOUT]\nenabled = 1',
            "merchant.m-1.rules.PAYMENT_TIMEOUT.enabled",
            ["true or false", "1"],
            id="enabled-one-per-merchant",
        ),
        pytest.param(
            '[merchant."m-1".rules.ADDRESS_CLUSTER]\nenabled = false',
            "merchant.m-1.rules.ADDRESS_CLUSTER",
            ["[rules.ADDRESS_CLUSTER]"],
            id="address-cluster-per-merchant",
        ),
        pytest.param(
            '[merchant."m-1".rules.ADDRESS_CLUSTER]\nmin_orders = 10',
            "merchant.m-1.rules.ADDRESS_CLUSTER",
            ["[rules.ADDRESS_CLUSTER]"],
            id="address-cluster-params-per-merchant",
        ),
        pytest.param(
            "[channel.web.rules.NEW_ACCOUNT_BURST]\nenabled = false",
            "channel.web.rules.NEW_ACCOUNT_BURST",
            ["[rules.NEW_ACCOUNT_BURST]"],
            id="burst-per-channel",
        ),
        pytest.param(
            '[merchant."m-1".rules.PAYMENT_FAILURE_SPIKE]\nenabled = false',
            "merchant.m-1.rules.PAYMENT_FAILURE_SPIKE",
            ["[rules.PAYMENT_FAILURE_SPIKE]"],
            id="spike-per-merchant",
        ),
        pytest.param("amount_tolerance = -0.01", "amount_tolerance", [">= 0", "-0.01"], id="negative-tolerance"),
        pytest.param('rules = "all"', "rules", ["table"], id="rules-not-a-table"),
        pytest.param('[rules]\nPAYMENT_TIMEOUT = "45m"', "rules.PAYMENT_TIMEOUT", ["table"], id="rule-not-a-table"),
    ],
)
def test_errors_name_the_key_path_and_what_was_expected(
    tmp_path: Path, text: str, key: str, expected: list[str]
) -> None:
    message = error_of(tmp_path, text)
    assert _key(key).search(message), message
    for fragment in expected:
        assert fragment in message


def test_an_unknown_channel_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[channel.market_place.rules.PAYMENT_TIMEOUT]\nthreshold = "2h"')
    assert _key("channel.market_place").search(message)
    assert "marketplace" in message


def test_config_error_is_part_of_the_error_family(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[rules.PAYMENT_TIMEOUT]\nthreshold = "soon"')
    assert isinstance(info.value, OrderwatchError)
    assert isinstance(info.value, ValueError)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "rules.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))) as info:
        RulesConfig.load(missing)
    assert "cannot read" in str(info.value)


def test_a_directory_is_not_a_readable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        RulesConfig.load(tmp_path)


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[rules.PAYMENT_TIMEOUT\nthreshold = "45m"\n')
    with pytest.raises(ConfigError) as info:
        RulesConfig.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "TOML" in message
    assert "line 1" in message  # where it broke


def test_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[rules.PAYMENT_TIMEOUT]\n# caf\xe9\nthreshold = "45m"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        RulesConfig.load(path)
