"""Deterministic identifiers: exception ids and address fingerprints.

The same facts give the same id on every run and every worker, which is what lets consumers,
handlers and replays dedupe without coordination.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

__all__ = ["address_fingerprint", "exception_id", "normalise_address_part"]

_FOLD = re.compile(r"[\W_]+", re.UNICODE)


def exception_id(rule: str, subject: str, start_event_id: str) -> str:
    """Hash of rule code, subject and the episode's start event id (32 hex chars)."""
    raw = f"{rule}\x1f{subject}\x1f{start_event_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def normalise_address_part(value: str) -> str:
    # Case, whitespace and punctuation vary between checkouts of the same street address.
    return _FOLD.sub("", value.casefold())


# Cached: the order and address detectors both key an order.created by it (pure, so safe).
@lru_cache(maxsize=1024)
def address_fingerprint(line1: str, postal_code: str, country: str) -> str:
    """Lower-cased, whitespace- and punctuation-folded `line1 + postal_code + country`, hashed,
    so no raw address leaves the detector (20 hex chars)."""
    key = "|".join(normalise_address_part(p) for p in (line1, postal_code, country))
    return hashlib.sha256(key.encode()).hexdigest()[:20]
