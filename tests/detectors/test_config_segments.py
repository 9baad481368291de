"""Segment overrides: payment method, carrier and country next to merchant and channel, in the
documented precedence, through the one profile lookup the detectors use."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderwatch.detectors.config import SEGMENTS
from orderwatch.detectors.engine import Engine
from orderwatch.errors import ConfigError
from tests.detectors.test_config import load
from tests.factories import T0, at, created, opened, paid, run, shipment

MIN = 60.0
HOUR = 3600.0
DAY = 86400.0

# One rule set by every scope, each to its own value, so the winner is visible.
ALL_SCOPES = """
    [rules.PAYMENT_TIMEOUT]
    threshold = "40m"
    [country.DE.rules.PAYMENT_TIMEOUT]
    threshold = "1h"
    [channel.marketplace.rules.PAYMENT_TIMEOUT]
    threshold = "2h"
    [carrier.dhl.rules.PAYMENT_TIMEOUT]
    threshold = "3h"
    [payment_method.bank_transfer.rules.PAYMENT_TIMEOUT]
    threshold = "4d"
    [merchant."m-42".rules.PAYMENT_TIMEOUT]
    threshold = "5h"
    [payment_method.invoice.rules.PAYMENT_TIMEOUT]
    enabled = false
"""


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ({}, 40 * MIN),
        ({"country": "DE"}, 1 * HOUR),
        ({"country": "de"}, 1 * HOUR),  # the address's country, whatever its case
        ({"country": "DE", "channel": "marketplace"}, 2 * HOUR),
        ({"country": "DE", "channel": "marketplace", "carrier": "dhl"}, 3 * HOUR),
        ({"channel": "marketplace", "carrier": "dhl", "payment_method": "bank_transfer"}, 4 * DAY),
        ({"channel": "marketplace", "payment_method": "bank_transfer", "merchant": "m-42"}, 5 * HOUR),
        ({"payment_method": "invoice", "channel": "marketplace"}, None),
        ({"payment_method": "invoice", "merchant": "m-42"}, 5 * HOUR),
        ({"payment_method": "card", "country": "FR", "carrier": "ups", "merchant": "m-1"}, 40 * MIN),
    ],
)
def test_precedence_merchant_payment_method_carrier_channel_country(
    tmp_path: Path, segments: dict[str, str], expected: float | None
) -> None:
    assert SEGMENTS == ("merchant", "payment_method", "carrier", "channel", "country")
    cfg = load(tmp_path, ALL_SCOPES)
    assert cfg.profile(**segments)["PAYMENT_TIMEOUT"] == expected


def test_the_profile_cache_holds_configured_values_only(tmp_path: Path) -> None:
    cfg = load(tmp_path, ALL_SCOPES)
    for i in range(2000):  # a stream of ever-new merchant ids and payment methods
        cfg.profile(f"shop-{i}", "web", f"method-{i}", "ZZ", f"carrier-{i}")
    cfg.profile("m-42", "web", "bank_transfer")
    assert len(cfg._profiles) == 2
    assert cfg.profile_key(cfg.profile("m-7", "web", "bank_transfer", "DE")) == (
        None,
        None,
        "bank_transfer",
        "DE",
        None,
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[country.de.rules.PAYMENT_TIMEOUT]\nthreshold = "1h"', "country.de"),
        ('[country.DEU.rules.PAYMENT_TIMEOUT]\nthreshold = "1h"', "ISO 3166"),
        ('[payment_method."".rules.PAYMENT_TIMEOUT]\nthreshold = "1h"', "1 to 128 printable"),
        ('[carrier."' + "x" * 200 + '".rules.TRACKING_STALLED]\nthreshold = "1h"', "1 to 128 printable"),
        ("[payment_method.card.rules.ADDRESS_CLUSTER]\nenabled = false", "set it under [rules.ADDRESS_CLUSTER]"),
        ('[payment_method.card.rules.PAYMENT_TIMEOUT]\nthreshold = "soon"', "payment_method.card.rules"),
        ("[payment_method.card]\nrules = 3", "expected a table"),
        ('[payment_method.card.limits]\nx = "1h"', "unknown; expected rules"),
        ('[segment.card.rules.PAYMENT_TIMEOUT]\nthreshold = "1h"', "payment_method, carrier"),
    ],
)
def test_bad_segment_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert needle in str(info.value)


def test_the_engine_uses_the_payment_method_of_the_order(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[payment_method.bank_transfer.rules.PAYMENT_TIMEOUT]\nthreshold = "3d"')
    events = [
        created("o-card", T0, payment_method="card"),
        paid("o-card", at(45)),
        created("o-bank", at(1), payment_method="bank_transfer"),
        paid("o-bank", at(days=2)),
        created("o-bank-unpaid", at(2), payment_method="bank_transfer"),
        created("o-none", at(3)),
        paid("o-none", at(50)),
    ]
    ems = run(sorted(events, key=lambda ev: ev.time), config=cfg, until=at(days=5))
    assert sorted(e.record.order_id for e in opened(ems, "PAYMENT_TIMEOUT")) == ["o-bank-unpaid", "o-card", "o-none"]
    late = next(e for e in opened(ems, "PAYMENT_TIMEOUT") if e.record.order_id == "o-bank-unpaid")
    assert late.record.event_time == pytest.approx(at(2).timestamp() + 3 * DAY)


def test_a_carrier_override_applies_once_the_shipment_names_the_carrier(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[carrier.ups.rules.TRACKING_STALLED]\nthreshold = "5d"')
    journeys = []
    for oid, carrier in (("o-dhl", "dhl"), ("o-ups", "ups")):
        journeys += [
            created(oid, T0),
            paid(oid, at(2)),
            shipment("shipment.created", oid, at(hours=2), carrier=carrier),
            shipment("shipment.delivered", oid, at(days=4, hours=2)),
        ]
    journeys.sort(key=lambda ev: ev.time)
    ems = run(journeys, config=cfg, until=at(days=6))
    # 4 days without tracking: stalled under the default 3 days, not under ups's 5.
    assert [e.record.order_id for e in opened(ems, "TRACKING_STALLED")] == ["o-dhl"]


def test_a_restored_order_keeps_its_segment_profile(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[payment_method.bank_transfer.rules.PAYMENT_TIMEOUT]\nthreshold = "3d"')
    first = Engine(cfg)
    run([created("o-1", T0, payment_method="bank_transfer")], engine=first)
    blob = first.orders.snapshot("o-1")
    second = Engine(cfg)
    second.orders.restore("o-1", blob)
    assert second.orders.states["o-1"].profile["PAYMENT_TIMEOUT"] == 3 * DAY
    # A snapshot written before segments existed (merchant, channel only) still restores.
    second.orders.restore("o-2", blob.replace(b'[null,null,"bank_transfer",null,null]', b'["m-1","web"]'))
    assert second.orders.states["o-2"].profile["PAYMENT_TIMEOUT"] == 30 * MIN
