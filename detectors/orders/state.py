"""The state of one order: flag bits, deadline episodes, and the helpers every rule family of
the order detector shares (milliseconds in snapshots, the money tolerance)."""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterator
from typing import Any

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import Profile
from orderwatch.detectors.ids import exception_id
from orderwatch.detectors.orders.episodes import Episode, decode
from orderwatch.detectors.records import ExceptionRecord
from orderwatch.detectors.snapshots import GC

__all__ = [
    "CANCELLED",
    "CANCELLED_RETENTION",
    "CREATED",
    "DELIVERED",
    "DUPLICATE_FIRED",
    "EXCEEDS_FIRED",
    "FLAG_NAMES",
    "GC",
    "ORDER_EVENT_TYPES",
    "PAID",
    "PAID_OR_LATER",
    "PHONE_OK",
    "PROMISE_FROM_SHIPMENT",
    "REACHED_PAID",
    "RESERVATION_SEEN",
    "SHIPPED",
    "SHIP_EPISODE_STARTED",
    "TERMINAL",
    "TERMINAL_STATUSES",
    "Episode",
    "OrderState",
    "add_payment_id",
    "compact",
    "compact_ids",
    "episodes",
    "held",
    "held_at",
    "hold",
    "known_status",
    "milli_tolerance",
    "payment_ids",
    "to_ms",
    "to_sec",
    "unhold",
]  # fmt: skip

# Flag bits of OrderState.flags (one int instead of a dozen booleans keeps the state small).
CREATED = 1
PAID = 2  # a payment.succeeded was seen
REACHED_PAID = 4  # status paid or later, or cancelled
RESERVATION_SEEN = 8  # inventory.reserved or reservation_failed
SHIPPED = 16
DELIVERED = 32
TERMINAL = 64
PHONE_OK = 128
DUPLICATE_FIRED = 256
EXCEEDS_FIRED = 512
CANCELLED = 1024
SHIP_EPISODE_STARTED = 2048
PROMISE_FROM_SHIPMENT = 4096

FLAG_NAMES = (
    (CREATED, "created"),
    (PAID, "paid"),
    (REACHED_PAID, "reached_paid"),
    (RESERVATION_SEEN, "reservation_seen"),
    (SHIPPED, "shipped"),
    (DELIVERED, "delivered"),
    (CANCELLED, "cancelled"),
    (TERMINAL, "terminal"),
)

PAID_OR_LATER = frozenset({"paid", "allocated", "shipped", "delivered", "completed", "refunded"})
TERMINAL_STATUSES = frozenset({"delivered", "completed", "cancelled", "refunded"})
# A cancelled order is remembered longer than other finished ones: a shipment weeks after the
# cancellation is still SHIPPED_AFTER_CANCEL, and live, a DUPLICATE_ORDER record that travels
# through the customer agent (on another worker, possibly days of event time behind in a
# replay) still finds the cancellation that resolves it.
CANCELLED_RETENTION = 30 * 86400.0

ORDER_EVENT_TYPES = frozenset(
    {
        "order.created",
        "order.status_changed",
        "order.address_updated",
        "order.cancel_requested",
        "order.cancelled",
        "payment.succeeded",
        "payment.failed",
        "refund.requested",
        "refund.succeeded",
        "refund.failed",
        "inventory.reserved",
        "inventory.reservation_failed",
        "inventory.released",
        "shipment.created",
        "shipment.tracking_updated",
        "shipment.delivered",
        "shipment.exception",
    }
)


def held(st: OrderState) -> Iterator[tuple[str, str | None, bytes]]:
    """The order's open exceptions as (rule, ref, record packed by `hold`; `unhold` reads it):
    stored flat in one tuple (`OrderState.opened`), not a dict keyed by (rule, ref) tuples, and
    packed, since most are read once, when they resolve, days later: an order past its
    deadlines holds two or three, the bulk of its memory."""
    it = iter(st.opened)
    return zip(it, it, it, strict=True)


_FIELDS = tuple(f.name for f in dataclasses.fields(ExceptionRecord))
# Fields whose value the order can work out again (see `_implied`), in `_FIELDS` order.
_IMPLIABLE = frozenset(
    {
        "exception_id", "rule", "subject", "order_id", "severity", "status", "resolution_kind",
        "resolution_event_id", "resolution_event_time", "resolved_at", "revision", "amount",
    }
)  # fmt: skip
_TAIL_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(ExceptionRecord) if f.default is not dataclasses.MISSING
}


def _implied(name: str, oid: str, rule: str, known: dict[str, Any]) -> Any:
    """The value of field `name` that `hold` leaves out: what the order detector puts in a record
    it opens (`Detector._record`): subject and order the order's id, the id the hash of rule,
    subject and the evidence's start event id, the rule's own severity, the defaults of an open
    record. `known` holds the fields read so far (the subject, before the id)."""
    if name == "exception_id":
        start = known["evidence"].get("start_event_id") if isinstance(known.get("evidence"), dict) else None
        return exception_id(rule, known["subject"], start) if isinstance(start, str) else None
    if name == "rule":
        return rule
    if name in ("subject", "order_id"):
        return oid
    if name == "severity":
        meta = RULES.get(rule)
        return meta.severity if meta is not None else None
    return _TAIL_DEFAULTS[name]


def _same(a: Any, b: Any) -> bool:
    # Of the same type too: 0 == 0.0 == False, but each goes on the wire differently.
    return a is b or (type(a) is type(b) and a == b)


# The id comes first among the fields but is implied by the subject and the evidence: worked out
# last, when those are known.
_ORDER = (*_FIELDS[1:], _FIELDS[0])


# Text held records share, for deflate to refer to instead of storing it (what the order rules put
# in the records an order holds for days: evidence keys, summaries, times). It changes only the
# size of a held record, never its content, and never leaves the process (snapshots store the
# record itself): edit it freely. The order's id is appended per order (`_zdict`).
_ZDICT = (
    b'0,0]{"promised_ship_by":null,"payment_id":"","refund_id":"","reason_code":"","order_total":"'
    b'"promised_delivery_by":"2026-0","order_status":"paid","order_status":"shipped","last_event_id":"'
    b"Refund  for order  failed (). has not been paid out. Cancellation of order  was requested but not processed."
    b" is paid but no stock was reserved for it.Payment for order  succeeded but the order is still not marked paid."
    b"Payments for order  do not add up to its total. has not been paid. is paid but no shipment was created in time."
    b" was not delivered by its promised date.Tracking for order  has not moved for 3 days."
    b' has seen no event for 7 days.",{"start_event_id":"","start_event_time":null,"deadline":"2026-0'
    b'","start_event_time":"2026-0T00:00:00+00:00","deadline":"2026-0T00:00:00+00:00"'
)


# Raw deflate (no header) with a 2 KB window, room for the dictionary and a record, and the
# smallest hash table (memLevel 1): a window and table sized for megabytes cost a 128 KB clear and
# larger buffers on every `hold`, for no fewer bytes on records this short.
_WBITS = -11


def _zdict(oid: str) -> bytes:
    return _ZDICT + b"Order " + oid.encode()


def hold(oid: str, rule: str, rec: ExceptionRecord) -> bytes:
    """`rec`, held open by order `oid` under `rule`: compact JSON of a bit mask of the fields left
    out because `_implied` gives them back, then the others in `_ORDER`, deflated against
    `_ZDICT` and the order's id. A deadline exception keeps its two times, summary and evidence
    only, in about 90 bytes (380 as JSON of the whole record)."""
    known: dict[str, Any] = {}
    mask = 0
    kept: list[Any] = [0]
    for bit, name in enumerate(_ORDER):
        value = known[name] = getattr(rec, name)
        if name in _IMPLIABLE and _same(value, _implied(name, oid, rule, known)):
            mask |= 1 << bit
        else:
            kept.append(value)
    kept[0] = mask
    deflate = zlib.compressobj(9, zlib.DEFLATED, _WBITS, 1, zlib.Z_DEFAULT_STRATEGY, _zdict(oid))
    return deflate.compress(json.dumps(kept, separators=(",", ":")).encode()) + deflate.flush()


def unhold(oid: str, rule: str, blob: bytes) -> ExceptionRecord:
    """The record `hold` packed, equal to the one it was given."""
    inflate = zlib.decompressobj(_WBITS, _zdict(oid))
    mask, *kept = json.loads(inflate.decompress(blob) + inflate.flush())
    values = iter(kept)
    known: dict[str, Any] = {}
    for bit, name in enumerate(_ORDER):
        known[name] = _implied(name, oid, rule, known) if mask >> bit & 1 else next(values)
    return ExceptionRecord(**known)


def held_at(st: OrderState, rule: str, ref: str | None) -> int:
    """Position in `OrderState.opened` of the open exception of (rule, ref), or -1."""
    opened = st.opened
    for i in range(0, len(opened), 3):
        if opened[i] == rule and opened[i + 1] == ref:
            return i
    return -1


def episodes(st: OrderState) -> list[Episode]:
    """The order's episodes, in the order they started, ids as text (`OrderState.eps`: see
    `detectors.orders.episodes`)."""
    return decode(st.eps)


_STATUSES = {
    s: s for s in ("pending_payment", "paid", "allocated", "shipped", "delivered", "completed", "cancelled", "refunded")
}


# Every value the flag bits can take, created once: an int above 256 is a new 32-byte object per
# order otherwise (the flags of a paid order already pass 2048).
_FLAG_VALUES = tuple(range(PROMISE_FROM_SHIPMENT * 2))


def compact(st: OrderState) -> None:
    """Share what can be shared once an event is applied: the flags' int object, and the total's
    for the paid sum when they are equal (the common case), 64 bytes an order."""
    st.flags = _FLAG_VALUES[st.flags]
    if st.paid == st.total:
        st.paid = st.total


def payment_ids(st: OrderState) -> tuple[str, ...]:
    """The distinct payment ids of the order, in the order they came."""
    ids = st.pay_ids
    return (ids,) if isinstance(ids, str) else ids


def add_payment_id(st: OrderState, pid: str) -> None:
    # A lone id is kept bare: a 1-tuple around it is 48 bytes an order.
    st.pay_ids = pid if not st.pay_ids else (*payment_ids(st), pid)


def compact_ids(ids: list[str]) -> str | tuple[str, ...]:
    """`pay_ids` from a stored list (snapshots keep a list)."""
    return ids[0] if len(ids) == 1 else tuple(ids)


def known_status(status: str) -> str:
    """The one shared copy of a status string (the parser hands a new one with every event)."""
    return _STATUSES.get(status, status)


class OrderState:
    __slots__ = (
        "early", "eps", "flags", "last_t", "oid", "opened", "paid", "pay_ids", "profile", "refunds", "ship_by",
        "status", "total", "wake",
    )  # fmt: skip

    def __init__(self, oid: str, profile: Profile) -> None:
        self.oid = oid
        self.flags = 0
        self.status: str | None = None
        self.total = 0  # milli-units
        self.paid = 0  # sum of distinct succeeded payments, milli-units
        # One payment id (the common case) as itself, several as a tuple: `payment_ids` reads it.
        self.pay_ids: str | tuple[str, ...] = ()
        self.refunds: dict[str, list[int]] | None = None  # refund id -> [requested, succeeded, done]
        self.last_t = float("-inf")
        self.ship_by: float | None = None
        # `bytes` (packed) while the order waits, a `Work` tuple while it is busy: see `episodes`.
        # Any: the rules run only on a busy order and read it as the tuple.
        self.eps: Any = b""
        # Payments seen before order.created: (payment id, amount, currency, event id, time).
        self.early: list[tuple[str, int, str, str, float]] | None = None
        # Open exceptions, flat: (rule, ref, packed record) each (see `held`).
        self.opened: tuple[Any, ...] = ()
        self.wake: float | None = None
        self.profile = profile


def to_ms(t: float | None) -> int | None:
    # Milliseconds as an int: shorter than a float's repr, and event times carry no finer detail.
    return None if t is None or t == float("-inf") else round(t * 1000)


def to_sec(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def milli_tolerance(tolerance: float) -> int:
    return round(tolerance * 1000)
