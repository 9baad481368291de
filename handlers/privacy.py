"""Masking of personal data in what the handlers show to people (notifications, ops API).

Exception evidence may carry phones, addresses or emails; `mask_evidence` hides them by key and
`mask_text` hides anything in free text that looks like a phone number or an email address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "PERSONAL_KEYS", "mask_evidence", "mask_summary", "mask_text"]

MASK = "***"

PERSONAL_KEYS: frozenset[str] = frozenset(
    {
        "phone",
        "contact_phone",
        "phone_number",
        "mobile",
        "shipping_address",
        "billing_address",
        "address",
        "line1",
        "line2",
        "postal_code",
        "zip",
        "recipient",
        "email",
        "name",
        "first_name",
        "last_name",
        "full_name",
        "customer_name",
    }
)
# `address_fingerprint` is a hash made so that no raw address leaves the detector: kept.
_PERSONAL_SUFFIXES = ("_phone", "_email", "_address", "_recipient")

# Keys whose values identify things or say when: never free text, never rewritten by mask_text
# (a payment id or a tracking number can look like a phone number).
_KEEP_SUFFIXES = (
    "id",
    "ids",
    "fingerprint",
    "number",
    "sku",
    "_at",
    "time",
    "since",
    "deadline",
    "_by",
    "window_start",
    "window_end",
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A run of digits with the separators people write phones with; bounded so that it does not start
# or end inside an id (`o-0000023`, a uuid) or a decimal. Digit count is checked separately.
_PHONE = re.compile(r"(?<![\w.+:/-])(?:\+|00)?\(?\d[\d\s().-]*\d(?![\w-]|\.\d)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _phone_like(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if not 8 <= digits <= 15 or _DATE.search(text):
        return text
    return MASK


def mask_text(s: str) -> str:
    """`s` with every email address and every phone-number-like run of digits replaced by `***`.

    Dates (`2026-03-02`), decimals and short numbers are left alone."""
    return _PHONE.sub(_phone_like, _EMAIL.sub(MASK, s))


def _personal(key: str) -> bool:
    k = key.lower()
    return k in PERSONAL_KEYS or k.endswith(_PERSONAL_SUFFIXES)


def _kept(key: str) -> bool:
    return key.lower().endswith(_KEEP_SUFFIXES)


def _mask_value(value: Any, key: str | None) -> Any:
    if key is not None and _personal(key):
        return None if value is None else MASK
    if isinstance(value, Mapping):
        return {str(k): _mask_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Items of a list inherit the list's key: `order_ids: [...]` stays, `notes: [...]` is scanned.
        return [_mask_value(v, key) for v in value]
    if isinstance(value, str) and not (key is not None and _kept(key)):
        return mask_text(value)
    return value


def mask_evidence(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """A masked copy of `evidence`: values of personal keys (phone, address parts, recipient,
    email, name, at any depth) become `***`; other free-text strings pass through `mask_text`;
    ids, fingerprints, amounts and times are kept as they are. The input is not modified."""
    return {str(k): _mask_value(v, str(k)) for k, v in evidence.items()}


def _personal_values(value: Any, key: str | None, out: set[str]) -> None:
    if key is not None and _personal(key):
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, Mapping | list | tuple):
            # everything under a personal key is personal (an address's street, city, postal code)
            for v in value.values() if isinstance(value, Mapping) else value:
                _personal_values(v, key, out)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _personal_values(v, str(k), out)
    elif isinstance(value, list | tuple):
        for v in value:
            _personal_values(v, key, out)


def mask_summary(text: str, evidence: Mapping[str, Any]) -> str:
    """Free text about an exception (its summary, a note) with the personal values of its
    evidence (what `mask_evidence` masks by key: a street, a recipient) replaced by `***`
    wherever they appear, then `mask_text`. An address in free text has no shape to find it by;
    the evidence it came from says what it is."""
    found: set[str] = set()
    _personal_values(evidence, None, found)
    # longest first, so a street that contains a shorter value is masked whole; tiny values (a
    # two-letter country code) are not worth hiding and would mangle the text
    for value in sorted((v for v in found if len(v.strip()) >= 4), key=len, reverse=True):
        text = text.replace(value, MASK)
    return mask_text(text)
