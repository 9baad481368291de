"""An order's deadline episodes packed in one `bytes` (`OrderState.eps`): one object an order
instead of a tuple of rules, deadline floats and id strings, which was most of the memory of an
open order (docs/architecture.md, "State size").

Layout, little-endian: the number of episodes k (2 bytes); k rule bytes (the frozen numbers of
`detectors.snapshots.RULE_IDS`, bit 7 set when the episode has a ref); k deadlines (8-byte
doubles: exact); then per episode its start event id and, when it has one, its ref, each as a
field: a canonical UUID (lower-case 8-4-4-4-12) as 0xFF and its 16 bytes, any other text as its
UTF-8 length (one byte below 0xFD, or 0xFE and four bytes) and the UTF-8 itself. A start id equal
to the next episode's is the one byte 0xFD (one event often starts several episodes).

Stored newest first: a restart puts its episode at the front, and the next restart of the same
rule (ORDER_STUCK, at every event of the order) finds it there without walking the fields.
Finding a rule is one `bytes.find`, the earliest deadline one `struct` call; the ids are read
only when an episode fires or the state is snapshot or described. An index `i` below is a
position in this layout; `decode` gives the episodes oldest first, in the order they started."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache

from orderwatch.detectors.snapshots import RULE_BY_ID, RULE_IDS

__all__ = [
    "Episode",
    "deadline",
    "decode",
    "due_before",
    "earliest",
    "encode",
    "episode",
    "find",
    "put",
    "remove",
    "rule_names",
]

# An episode: (rule, deadline, start event id, ref). `ref` tells episodes of one rule apart
# within an order (the refund id for REFUND_OVERDUE), else None. The start time is not kept: it
# is the deadline minus the threshold.
Episode = tuple[str, float, str, str | None]

_REF = 0x80
_RULE = 0x7F
_UUID = 0xFF
_LONG = 0xFE
_SAME = 0xFD  # as a start id: the same as the next episode's
_COUNT = struct.Struct("<H")
_DOUBLE = struct.Struct("<d")
_BYTE = tuple(bytes((n,)) for n in range(256))
_UUID_TAG = _BYTE[_UUID]
_LONG_TAG = _BYTE[_LONG]
_SAME_TAG = _BYTE[_SAME]
_DOUBLES = tuple(struct.Struct(f"<{k}d") for k in range(16))


def _doubles(k: int) -> struct.Struct:
    return _DOUBLES[k] if k < len(_DOUBLES) else struct.Struct(f"<{k}d")


# One event often starts several episodes (a payment: up to five): encode its id once.
@lru_cache(maxsize=1)
def field(text: str) -> bytes:
    """`text` as a field of the packed form (a UUID in 17 bytes, other text length-prefixed)."""
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        hexa = text.replace("-", "")
        try:
            raw = bytes.fromhex(hexa)
        except ValueError:
            raw = b""
        if raw.hex() == hexa:  # lower case, nothing bytes.fromhex skipped: it reads back the same
            return _UUID_TAG + raw
    data = text.encode("utf-8", "surrogatepass")
    n = len(data)
    return (_BYTE[n] if n < _SAME else _LONG_TAG + n.to_bytes(4, "little")) + data


def _field_end(eps: bytes, off: int) -> int:
    tag = eps[off]
    if tag == _UUID:
        return off + 17
    if tag == _SAME:
        return off + 1
    if tag == _LONG:
        return off + 5 + int.from_bytes(eps[off + 1 : off + 5], "little")
    return off + 1 + tag


def _field_text(eps: bytes, off: int) -> str:
    tag = eps[off]
    if tag == _UUID:
        h = eps[off + 1 : off + 17].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if tag == _LONG:
        n = int.from_bytes(eps[off + 1 : off + 5], "little")
        return eps[off + 5 : off + 5 + n].decode("utf-8", "surrogatepass")
    return eps[off + 1 : off + 1 + tag].decode("utf-8", "surrogatepass")


def _count(eps: bytes) -> int:
    return eps[0] | eps[1] << 8 if eps else 0


def _tail(eps: bytes, k: int, i: int) -> tuple[int, int]:
    """Start and end offsets of episode i's fields (its id, and its ref if it has one)."""
    off = 2 + 9 * k
    for j in range(i):
        off = _field_end(eps, off)
        if eps[2 + j] & _REF:
            off = _field_end(eps, off)
    end = _field_end(eps, off)
    if eps[2 + i] & _REF:
        end = _field_end(eps, end)
    return off, end


def _id_at(eps: bytes, off: int, i: int) -> int:
    """Offset of the field that holds episode i's start id, its own field being at `off`."""
    while eps[off] == _SAME:
        off += 1
        if eps[2 + i] & _REF:
            off = _field_end(eps, off)
        i += 1
    return off


def find(eps: bytes, rule: str, ref: str | None = None) -> int:
    """Index of the episode of `rule` with `ref`, or -1."""
    if not eps:
        return -1
    k = eps[0] | eps[1] << 8
    if ref is None:
        i = eps.find(RULE_IDS[rule], 2, 2 + k)
        return i - 2 if i >= 0 else -1
    want = RULE_IDS[rule] | _REF
    i = eps.find(want, 2, 2 + k)
    while i >= 0:
        off = _tail(eps, k, i - 2)[0]
        if _field_text(eps, _field_end(eps, off)) == ref:
            return i - 2
        i = eps.find(want, i + 1, 2 + k)
    return -1


def deadline(eps: bytes, i: int) -> float:
    due: float = _DOUBLE.unpack_from(eps, 2 + _count(eps) + 8 * i)[0]
    return due


def episode(eps: bytes, i: int) -> Episode:
    k = _count(eps)
    rb = eps[2 + i]
    off = _tail(eps, k, i)[0]
    ref = _field_text(eps, _field_end(eps, off)) if rb & _REF else None
    sid = _field_text(eps, _id_at(eps, off, i))
    return (RULE_BY_ID[rb & _RULE], _DOUBLE.unpack_from(eps, 2 + k + 8 * i)[0], sid, ref)


def earliest(eps: bytes) -> float | None:
    """The earliest deadline (None: no episode)."""
    if not eps:
        return None
    k = eps[0] | eps[1] << 8
    due: float = min(_doubles(k).unpack_from(eps, 2 + k))
    return due


def remove(eps: bytes, i: int) -> bytes:
    """`eps` without episode i."""
    k = eps[0] | eps[1] << 8
    if k == 1:
        return b""
    di = 2 + k + 8 * i
    head = (_COUNT.pack(k - 1), eps[2 : 2 + i], eps[3 + i : di])
    if i == 0:
        s, e = _tail(eps, k, 0)
        return b"".join((*head, eps[di + 8 : s], eps[e:]))
    p, s = _tail(eps, k, i - 1)
    e = _tail_end(eps, s, i)
    if eps[p] == _SAME and eps[s] != _SAME:
        # The newer neighbour named this episode's id as its own: it gets the id itself.
        return b"".join((*head, eps[di + 8 : p], eps[s : _field_end(eps, s)], eps[p + 1 : s], eps[e:]))
    return b"".join((*head, eps[di + 8 : s], eps[e:]))


def _tail_end(eps: bytes, off: int, i: int) -> int:
    """End of episode i's fields, which start at `off`."""
    end = _field_end(eps, off)
    return _field_end(eps, end) if eps[2 + i] & _REF else end


def put(eps: bytes, rule: str, due: float, start_id: str, ref: str | None = None) -> bytes:
    """`eps` with the episode of (`rule`, `ref`) replaced or added (at the front), due at
    `due`. The hot path (every event restarts ORDER_STUCK): one `bytes.join`, no decoding."""
    rid = RULE_IDS[rule]
    sid = field(start_id)
    if ref is None:
        reff = b""
    else:
        reff = field(ref)
        rid |= _REF
    if not eps:
        return b"".join((b"\x01\x00", _BYTE[rid], _DOUBLE.pack(due), sid, reff))
    k = eps[0] | eps[1] << 8
    if ref is None:
        i = eps.find(rid, 2, 2 + k) - 2
        i = i if i >= 0 else -1
    else:
        i = find(eps, rule, ref)
    if i > 0:
        eps = remove(eps, i)
        k -= 1
    d = 2 + k
    t = d + 8 * k
    # Fields are prefix-free: the id at `o` is `sid` exactly when the bytes there start with it.
    if i == 0:  # the newest again (a restart): same rule byte, its deadline and fields first
        e = _field_end(eps, t)
        if reff:
            e = _field_end(eps, e)
        if k > 1 and eps.startswith(sid, e if eps[e] != _SAME else _id_at(eps, e, 1)):
            sid = _SAME_TAG
        return b"".join((eps[:d], _DOUBLE.pack(due), eps[d + 8 : t], sid, reff, eps[e:]))
    if eps.startswith(sid, t if eps[t] != _SAME else _id_at(eps, t, 0)):
        sid = _SAME_TAG
    return b"".join((_COUNT.pack(k + 1), _BYTE[rid], eps[2:d], _DOUBLE.pack(due), eps[d:t], sid, reff, eps[t:]))


def due_before(eps: bytes, now: float) -> list[Episode]:
    """The episodes whose deadline is before `now`, earliest first (ties: oldest first)."""
    if not eps:
        return []
    k = eps[0] | eps[1] << 8
    dues = _doubles(k).unpack_from(eps, 2 + k)
    hits = [(d, -j) for j, d in enumerate(dues) if d < now]
    hits.sort()
    return [episode(eps, -j) for _, j in hits]


def decode(eps: bytes) -> list[Episode]:
    """Every episode, oldest first (the order they started)."""
    if not eps:
        return []
    k = eps[0] | eps[1] << 8
    dues = _doubles(k).unpack_from(eps, 2 + k)
    fields: list[tuple[int, str | None]] = []
    off = 2 + 9 * k
    for j in range(k):
        at = off
        off = _field_end(eps, off)
        ref = None
        if eps[2 + j] & _REF:
            ref = _field_text(eps, off)
            off = _field_end(eps, off)
        fields.append((at, ref))
    out: list[Episode] = []
    sid = ""
    for j in range(k - 1, -1, -1):  # oldest first; an id "the same as the next" is the one just read
        at, ref = fields[j]
        if eps[at] != _SAME:
            sid = _field_text(eps, at)
        out.append((RULE_BY_ID[eps[2 + j] & _RULE], dues[j], sid, ref))
    return out


def encode(episodes: Iterable[Episode]) -> bytes:
    """The packed form of `episodes`, given oldest first (as `decode` gives them back)."""
    eps = b""
    for rule, due, sid, ref in episodes:
        eps = put(eps, rule, due, sid, ref)
    return eps


def rule_names(eps: bytes) -> list[str]:
    """The rule of each episode, newest first."""
    return [RULE_BY_ID[rb & _RULE] for rb in eps[2 : 2 + _count(eps)]]
