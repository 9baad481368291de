"""mask_evidence hides personal values by key at any depth and keeps ids, fingerprints, amounts
and times; mask_text hides phone numbers and emails in free text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orderwatch.handlers.privacy import MASK, mask_evidence, mask_summary, mask_text

PHONE = "+4915123456789"
ADDRESS = {"recipient": "Ada Lovelace", "line1": "12 Acacia Avenue", "line2": "Flat 3", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}  # fmt: skip


def _leaves(value: object) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [str(value)]


def test_personal_keys_are_masked_at_any_depth() -> None:
    evidence = {
        "contact_phone": PHONE,
        "shipping_address": ADDRESS,
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace", "phone": "030 1234567"},
        "previous": [{"address": {"line1": "1 Main St", "postal_code": "10115"}}],
        "postal_code": 10115,
        "billing_phone": "+4930123456",
    }
    masked = mask_evidence(evidence)
    text = json.dumps(masked)
    for secret in (PHONE, "Ada", "Lovelace", "Acacia", "10115", "ada@example.com", "1234567", "Main St", "123456"):
        assert secret not in text, secret
    assert masked["shipping_address"] == MASK
    assert masked["customer"] == {"email": MASK, "name": MASK, "phone": MASK}
    assert masked["previous"] == [{"address": MASK}]
    assert masked["postal_code"] == MASK


def test_ids_fingerprints_amounts_and_times_are_kept() -> None:
    evidence = {
        "order_id": "o-0000023",
        "event_id": "8c7e4645-2d4b-4c5d-ab2b-c05c9716bbd8",
        "payment_ids": ["p-12345678", "99887766554433"],
        "tracking_number": "00340434161094042557",
        "address_fingerprint": "3f2a9c0d1e",
        "amount": "540.75",
        "paid": 1234567890,
        "detected_at": "2026-03-02T08:02:12.011000+00:00",
        "deadline": "2026-03-02 08:02:12",
        "window_start": "2026-03-02T08:00:00Z",
        "carrier": "dhl",
        "reason": "lost",
        "contact_phone": None,
    }
    assert mask_evidence(evidence) == evidence


def test_free_text_is_scanned_and_the_input_is_not_modified() -> None:
    evidence = {"notes": [f"customer called from {PHONE}", "mail ada@example.com"], "reason": "call 030 1234 5678."}
    before = json.dumps(evidence)
    masked = mask_evidence(evidence)
    assert json.dumps(evidence) == before
    assert masked == {"notes": [f"customer called from {MASK}", f"mail {MASK}"], "reason": f"call {MASK}."}


@pytest.mark.parametrize(
    "text",
    [
        f"phone {PHONE} given",
        "(030) 123-45678",
        "+1 (415) 555-0132",
        "0044 20 7946 0958",
        "write to ada.lovelace+shop@mail.example.co.uk please",
        "+49.151.2345.6789",
    ],
)
def test_mask_text_hides_phones_and_emails(text: str) -> None:
    masked = mask_text(text)
    assert MASK in masked
    digits = [c for c in masked if c.isdigit()]
    assert len(digits) < 7
    assert "@" not in masked


@pytest.mark.parametrize(
    "text",
    [
        "Order o-0000023 has shipping details that cannot be used (phone_invalid).",
        "payment 8c7e4645-2d4b-4c5d-ab2b-c05c9716bbd8 of 540.75 EUR",
        "detected 2026-03-02T08:02:12.011000+00:00, deadline 2026-03-02 08:02",
        "5 orders from 3 customers in 24 h",
        "amount 1234.56 vs 1200.00",
    ],
)
def test_mask_text_leaves_ids_dates_and_amounts(text: str) -> None:
    assert mask_text(text) == text


def test_real_backtest_evidence_is_unchanged(tmp_path: Path) -> None:
    """The detector's evidence carries no personal data today: masking must not eat any of it."""
    from orderwatch.cli import main

    src, out = tmp_path / "in.jsonl", tmp_path / "exc.jsonl"
    assert main(["simulate", "--orders", "120", "--seed", "5", "--output", str(src)]) == 0
    assert main(["backtest", str(src), "--output", str(out)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events
    for ev in events:
        assert mask_evidence(ev["data"]["evidence"]) == ev["data"]["evidence"], ev["data"]["rule"]


def test_mask_summary_hides_the_evidence_personal_values_in_free_text() -> None:
    evidence = {"contact_phone": PHONE, "shipping_address": ADDRESS, "order_id": "o-1", "carrier": "dhl"}
    summary = f"Order o-1: dhl cannot deliver to Ada Lovelace, 12 Acacia Avenue, Berlin (call {PHONE})."
    masked = mask_summary(summary, evidence)
    assert masked == f"Order o-1: dhl cannot deliver to {MASK}, {MASK}, {MASK} (call {MASK})."
    # nothing personal in the evidence: only phone- and email-shaped text goes
    assert mask_summary("Order o-1 stalled at dhl; ada@example.org", {"carrier": "dhl"}) == (
        f"Order o-1 stalled at dhl; {MASK}"
    )
