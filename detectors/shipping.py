"""Checks behind INVALID_SHIPPING_INFO: required address parts, postal code formats, phone numbers.

Returns problem codes only (never the values), so callers can put them in evidence safely.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from orderwatch.schemas.events import ADDRESS_PARTS, Address

__all__ = ["POSTAL_CODE_FORMATS", "address_problems", "phone_ok"]

# Formats for the countries most shops ship to. A country not listed still needs a non-empty
# postal code unless it is one of those that have none.
POSTAL_CODE_FORMATS: dict[str, re.Pattern[str]] = {
    code: re.compile(pattern, re.IGNORECASE)
    for code, pattern in {
        "US": r"^\d{5}(-\d{4})?$",
        "CA": r"^[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d$",
        "GB": r"^[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$",
        "DE": r"^\d{5}$",
        "FR": r"^\d{5}$",
        "IT": r"^\d{5}$",
        "ES": r"^\d{5}$",
        "NL": r"^\d{4} ?[A-Z]{2}$",
        "BE": r"^\d{4}$",
        "AT": r"^\d{4}$",
        "CH": r"^\d{4}$",
        "DK": r"^\d{4}$",
        "NO": r"^\d{4}$",
        "SE": r"^\d{3} ?\d{2}$",
        "FI": r"^\d{5}$",
        "PL": r"^\d{2}-\d{3}$",
        "PT": r"^\d{4}-\d{3}$",
        "CZ": r"^\d{3} ?\d{2}$",
        "IE": r"^[A-Z]\d[\dW] ?[A-Z\d]{4}$",
        "AU": r"^\d{4}$",
        "NZ": r"^\d{4}$",
        "JP": r"^\d{3}-?\d{4}$",
        "IN": r"^\d{6}$",
        "BR": r"^\d{5}-?\d{3}$",
        "MX": r"^\d{5}$",
        "SG": r"^\d{6}$",
        "ZA": r"^\d{4}$",
    }.items()
}
_NO_POSTAL_CODES = frozenset({"AE", "HK", "QA", "IE_LEGACY", "AO", "BS", "BZ", "FJ", "GH", "JM"})


@lru_cache(maxsize=4096)
def phone_ok(phone: str, country: str) -> bool:
    """E.164, or national format for the address's country; `phonenumbers` decides."""
    if not phone.strip():
        return False
    region = country.upper() if len(country) == 2 else None
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(parsed))


def address_problems(address: Address) -> list[str]:
    """Problem codes for an address: `missing_<part>`, `unknown_country`, `postal_code_format`."""
    problems = [f"missing_{part}" for part in ADDRESS_PARTS if not getattr(address, part).strip()]
    country = address.country.strip().upper()
    if country and (len(country) != 2 or country not in _COUNTRIES):
        problems.append("unknown_country")
    postal = address.postal_code.strip()
    fmt = POSTAL_CODE_FORMATS.get(country)
    if postal and fmt is not None and not fmt.match(postal):
        problems.append("postal_code_format")
    if not postal and country in _NO_POSTAL_CODES and "missing_postal_code" in problems:
        problems.remove("missing_postal_code")
    return problems


# ISO 3166 alpha-2 regions known to phonenumbers (it tracks ISO closely) plus a few it lacks.
_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS) | {"AQ", "BV", "HM", "TF", "UM", "PN", "GS"}
