"""An order's deadline episodes, in two forms (`OrderState.eps`). Packed in one `bytes` while the
order waits, which is nearly all its life: one object instead of a tuple of rules, deadline
floats and id strings, most of the memory of an open order. A flat tuple while the order is
busy (`Work`), so that the rules' many small changes per event stay tuple operations; the order
detector packs the orders it is no longer busy with (docs/architecture.md, "State size").

Packed layout, little-endian: the number of episodes k (2 bytes; from 65,535 on, 0xFFFF and
k in 4 bytes: refunds are episodes, and an order can be sent any number of them); k rule bytes (the frozen
numbers of `detectors.snapshots.RULE_IDS`, bit 7 set when the episode has a ref); k deadlines
(8-byte doubles: exact); then per episode, oldest first, its start event id and, when it has
one, its ref, each as a field: a canonical UUID (lower-case 8-4-4-4-12) as 0xFF and its 16
bytes, any other text as its UTF-8 length (one byte below 0xFD, or 0xFE and four bytes) and the
UTF-8 itself; a start id equal to the previous episode's is the one byte 0xFD (one event often
starts several episodes)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from orderwatch.detectors.snapshots import RULE_BY_ID, RULE_IDS

__all__ = [
    "Episode",
    "Work",
    "decode",
    "earliest",
    "encode",
    "field",
    "pack",
    "rule_names",
    "text",
    "unpack",
]

# An episode: (rule, deadline, start event id, ref). `ref` tells episodes of one rule apart
# within an order (the refund id for REFUND_OVERDUE), else None. The start time is not kept: it
# is the deadline minus the threshold.
Episode = tuple[str, float, str, str | None]
Work = tuple[Any, ...]
"""Episodes being worked on, flat, four items each, oldest first: rule, deadline, start id (its
text, or its packed field as `bytes` when it came from the packed form: see `text`), ref."""

_REF = 0x80
_RULE = 0x7F
_UUID = 0xFF
_LONG = 0xFE
_SAME = 0xFD  # a start id: the same as the previous episode's
_COUNT = struct.Struct("<H")
_MANY = 0xFFFF  # a count: the real one follows in 4 bytes
_BYTE = tuple(bytes((n,)) for n in range(256))
_UUID_TAG = _BYTE[_UUID]
_LONG_TAG = _BYTE[_LONG]
_SAME_TAG = _BYTE[_SAME]
_COUNTS = tuple(_COUNT.pack(k) for k in range(256))
_DOUBLES = tuple(struct.Struct(f"<{k}d") for k in range(16))
_RID = dict(RULE_IDS)
_NAME = dict(RULE_BY_ID)
# A rule byte (its ref bit set or not) to the rule's name.
_NAME_OF_BYTE = tuple(_NAME.get(b & _RULE, "") for b in range(256))


def _head(eps: bytes) -> tuple[int, int]:
    """The number of episodes of packed `eps` and where their rule bytes start."""
    k = eps[0] | eps[1] << 8
    if k == _MANY:
        return int.from_bytes(eps[2:6], "little"), 6
    return k, 2


def _count(k: int) -> bytes:
    if k < len(_COUNTS):
        return _COUNTS[k]
    return _COUNT.pack(k) if k < _MANY else _COUNT.pack(_MANY) + k.to_bytes(4, "little")


def _doubles(k: int) -> struct.Struct:
    return _DOUBLES[k] if k < len(_DOUBLES) else struct.Struct(f"<{k}d")


# One event often starts several episodes (a payment: up to five), side by side: encode its id once.
@lru_cache(maxsize=1)
def field(sid: str) -> bytes:
    """An id as a packed field: a UUID in 17 bytes, other text length-prefixed."""
    if len(sid) == 36 and sid[8:24:5] == "----":
        hexa = sid.replace("-", "")
        try:
            raw = bytes.fromhex(hexa)
        except ValueError:
            raw = b""
        if raw.hex() == hexa:  # lower case, nothing skipped: it reads back the same
            return _UUID_TAG + raw
    data = sid.encode("utf-8", "surrogatepass")
    n = len(data)
    return (_BYTE[n] if n < _SAME else _LONG_TAG + n.to_bytes(4, "little")) + data


def text(sid: str | bytes) -> str:
    """An id's text, from itself or from its packed field."""
    if isinstance(sid, str):
        return sid
    tag = sid[0]
    if tag == _UUID:
        h = sid[1:17].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return sid[5 if tag == _LONG else 1 :].decode("utf-8", "surrogatepass")


def _field_end(eps: bytes, off: int) -> int:
    tag = eps[off]
    if tag == _UUID:
        return off + 17
    if tag == _SAME:
        return off + 1
    if tag == _LONG:
        return off + 5 + int.from_bytes(eps[off + 1 : off + 5], "little")
    return off + 1 + tag


def unpack(eps: bytes) -> Work:
    """The working form of packed episodes (start ids stay fields until someone reads them;
    an id shared by episodes is one object again)."""
    if not eps:
        return ()
    k, r = _head(eps)
    d = r + k
    off = d + 8 * k
    dues = _doubles(k).unpack_from(eps, d)
    work: list[Any] = []
    sid = b""
    for j in range(k):
        rb = eps[r + j]
        tag = eps[off]
        if tag == _UUID:
            sid = eps[off : off + 17]
            off += 17
        elif tag == _SAME:
            off += 1
        else:
            end = _field_end(eps, off)
            sid = eps[off:end]
            off = end
        if rb & _REF:
            end = _field_end(eps, off)
            work += (_NAME_OF_BYTE[rb], dues[j], sid, text(eps[off:end]))
            off = end
        else:
            work += (_NAME_OF_BYTE[rb], dues[j], sid, None)
    return tuple(work)


def pack(work: Work) -> bytes:
    """The packed form of a working tuple."""
    n = len(work)
    if not n:
        return b""
    k = n >> 2
    refs = work[3::4]
    fields: list[bytes] = []
    prev = b""
    for sid, ref in zip(work[2::4], refs, strict=True):
        f = sid if sid.__class__ is bytes else field(sid)
        fields.append(_SAME_TAG if f == prev else f)
        prev = f
        if ref is not None:
            fields.append(field(ref))
    dues = _doubles(k).pack(*work[1::4])
    if refs.count(None) == k:
        rules = bytes(map(_RID.__getitem__, work[0::4]))
    else:
        rules = bytes(_RID[r] | (0 if ref is None else _REF) for r, ref in zip(work[0::4], refs, strict=True))
    return b"".join((_count(k), rules, dues, *fields))


def decode(eps: bytes | Work) -> list[Episode]:
    """Every episode, packed or not, oldest first (the order they started), ids as text."""
    work = unpack(eps) if isinstance(eps, bytes) else eps
    return [(work[i], work[i + 1], text(work[i + 2]), work[i + 3]) for i in range(0, len(work), 4)]


def encode(episodes: Iterable[Episode]) -> bytes:
    """The packed form of `episodes`, given oldest first, one per (rule, ref)."""
    return pack(tuple(x for ep in episodes for x in ep))


def earliest(eps: bytes | Work) -> float | None:
    """The earliest deadline, packed or not (None: no episode)."""
    if not eps:
        return None
    if isinstance(eps, tuple):
        due: float = min(eps[1::4])
        return due
    k, r = _head(eps)
    due = min(_doubles(k).unpack_from(eps, r + k))
    return due


def rule_names(eps: bytes | Work) -> list[str]:
    """The rule of each episode, packed or not."""
    if isinstance(eps, tuple):
        return list(eps[0::4])
    if not eps:
        return []
    k, r = _head(eps)
    return [_NAME[rb & _RULE] for rb in eps[r : r + k]]
