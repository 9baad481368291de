"""The routing table: which keyed detector gets which event type, by which key; which events
travel to a detector through a re-keyed internal topic when the detectors run in separate
agents; and the one adoption route (DUPLICATE_ORDER: the customer detector finds it, the order
detector owns and resolves it).

Declarative data plus small pure functions of an event, so the backtest's `Engine` (all
detectors in one process) and the live agents (one agent per detector, streams/) read the same
table. Nothing here imports a detector class or faust.

Live (one agent per detector, `<app>-...` internal topics):

- An agent reads the contract topics of its direct routes (`Route.forward is None`): the
  topic's Kafka key is already the route's key or a prefix of it (orders, payments and
  logistics are keyed by order id; inventory by sku, and the stock key is (sku, warehouse)).
- The agent that reads a contract topic directly (`home_of(topic)`) forwards every event with a
  forwarded route (`forwards(type)`) to `Route.forward`, keyed by `Route.key(event)`.
- An exception an adoption route claims (`adoption_for(emission)`) is sent by the finder's agent
  to `Adoption.forward`, keyed by `Adoption.key(record)`, as an `Adopt` for the owner.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Literal

from orderwatch.detectors.ids import address_fingerprint
from orderwatch.detectors.records import Emission, ExceptionRecord
from orderwatch.schemas.events import TOPIC_OF_TYPE

__all__ = [
    "ADOPT",
    "ADOPTIONS",
    "DETECTORS",
    "ROUTES",
    "Adopt",
    "Adoption",
    "DetectorName",
    "Route",
    "address_key",
    "adoption_for",
    "customer_key",
    "direct_topics",
    "forward_topics",
    "forwards",
    "home_of",
    "key_for",
    "order_key",
    "provider_key",
    "routes_for",
    "stock_key",
]

DetectorName = Literal["orders", "inventory", "address", "customer", "provider"]
DETECTORS: Final[tuple[DetectorName, ...]] = ("orders", "inventory", "address", "customer", "provider")

KeyFn = Callable[[Any], Hashable]


# -- keys: pure functions of a validated event ------------------------------------------------
def order_key(ev: Any) -> str:
    """The order id (every order, payment, refund, logistics and reservation event names one)."""
    return str(ev.data.order_id)


def stock_key(ev: Any) -> str:
    """(sku, warehouse) as one string, `sku + "\\x1f" + warehouse` (the stored table key)."""
    return f"{ev.data.sku}\x1f{ev.data.warehouse_id}"


def address_key(ev: Any) -> str:
    """The fingerprint of an order.created's shipping address (no raw address leaves here)."""
    a = ev.data.shipping_address
    return address_fingerprint(a.line1, a.postal_code, a.country)


def customer_key(ev: Any) -> str:
    return str(ev.data.customer_id)


def provider_key(ev: Any) -> str:
    return str(ev.data.provider)


# -- routes -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Route:
    """Events of `types` go to detector `detector`, keyed by `key`. `forward` is None when the
    detector's agent reads the events' own contract topic, else the internal topic (suffix of
    `<app>-`) the reading agent re-keys them onto."""

    detector: DetectorName
    types: frozenset[str]
    key: KeyFn
    key_name: str
    forward: str | None = None


_RESERVATIONS = frozenset({"inventory.reserved", "inventory.reservation_failed", "inventory.released"})
_ORDER_DIRECT = frozenset(t for t, topic in TOPIC_OF_TYPE.items() if topic in ("orders", "payments", "logistics"))

ROUTES: Final[tuple[Route, ...]] = (
    # Order in which the backtest applies one event's routes (and so the order of its emissions).
    Route("orders", _ORDER_DIRECT, order_key, "order id"),
    Route("orders", _RESERVATIONS, order_key, "order id", forward="order-inbox"),
    Route("inventory", _RESERVATIONS | {"inventory.level_reported"}, stock_key, "(sku, warehouse)"),
    Route("address", frozenset({"order.created"}), address_key, "address fingerprint", forward="by-address"),
    Route("customer", frozenset({"order.created"}), customer_key, "customer id", forward="by-customer"),
    Route("provider", frozenset({"payment.succeeded", "payment.failed"}), provider_key, "provider", "by-provider"),
)


# -- adoption ---------------------------------------------------------------------------------
ADOPT: Final = "orderwatch.adopt"
"""The `type` of an adoption as the owner detector receives it."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """An exception handed to the detector that will resolve it (an `Incoming` of type ADOPT).
    Live it travels as a control message; `id` dedupes re-deliveries like an event id."""

    id: str
    data: ExceptionRecord
    time: float  # the record's event time: where the owner's reorder buffer places it
    type: str = ADOPT

    @staticmethod
    def of(record: ExceptionRecord) -> Adopt:
        return Adopt(f"adopt:{record.exception_id}", record, record.event_time)


def _record_order(record: ExceptionRecord) -> str:
    if record.order_id is None:
        msg = f"{record.rule} exception {record.exception_id} names no order to adopt it"
        raise ValueError(msg)
    return record.order_id


@dataclass(frozen=True, slots=True)
class Adoption:
    """An exception of `rule` opened by `found_by` is owned by `owner`, keyed by `key(record)`,
    which resolves it on its own events (`resolved_by`, for people reading the table)."""

    rule: str
    found_by: DetectorName
    owner: DetectorName
    key: Callable[[ExceptionRecord], Hashable]
    resolved_by: str
    forward: str

    def claims(self, em: Emission) -> bool:
        return em.kind == "opened" and em.record.rule == self.rule


ADOPTIONS: Final[tuple[Adoption, ...]] = (
    Adoption(
        "DUPLICATE_ORDER",
        found_by="customer",
        owner="orders",
        key=_record_order,
        resolved_by="order.cancelled (or order.status_changed to cancelled) of the duplicate",
        forward="order-inbox",
    ),
)


# -- questions the callers ask ----------------------------------------------------------------
def routes_for(event_type: str) -> tuple[Route, ...]:
    """The routes of one event type, in application order (empty: no detector wants it)."""
    return _BY_TYPE.get(event_type, ())


def key_for(detector: DetectorName, ev: Any) -> Hashable:
    """The key under which `detector` takes `ev` (an event or an `Adopt`); KeyError when the
    table routes no such input to it."""
    return _KEY_OF[detector][ev.type](ev.data if ev.type == ADOPT else ev)


def forwards(event_type: str) -> tuple[Route, ...]:
    """Routes by which an event of this type leaves the agent reading its contract topic."""
    return tuple(r for r in routes_for(event_type) if r.forward is not None)


def direct_topics(detector: DetectorName) -> frozenset[str]:
    """Contract topics (unprefixed) the detector's agent reads itself."""
    return frozenset(TOPIC_OF_TYPE[t] for r in ROUTES if r.detector == detector and r.forward is None for t in r.types)


def forward_topics(detector: DetectorName) -> frozenset[str]:
    """Internal topics (suffixes of `<app>-`) the detector's agent reads: forwarded events and
    adoptions it owns."""
    routes = {r.forward for r in ROUTES if r.detector == detector and r.forward is not None}
    return frozenset(routes | {a.forward for a in ADOPTIONS if a.owner == detector})


def home_of(topic: str) -> DetectorName:
    """The detector whose agent reads contract topic `topic` (and forwards from it)."""
    for r in ROUTES:
        if r.forward is None and any(TOPIC_OF_TYPE[t] == topic for t in r.types):
            return r.detector
    msg = f"no detector reads topic {topic!r} directly"
    raise KeyError(msg)


def adoption_for(found_by: DetectorName, em: Emission) -> Adoption | None:
    """The adoption route that claims this emission of `found_by`, if any."""
    for a in ADOPTIONS:
        if a.found_by == found_by and a.claims(em):
            return a
    return None


_BY_TYPE: dict[str, tuple[Route, ...]] = {
    t: tuple(r for r in ROUTES if t in r.types) for t in sorted({t for r in ROUTES for t in r.types})
}
_KEY_OF: dict[str, dict[str, Callable[[Any], Hashable]]] = {name: {} for name in DETECTORS}
for _route in ROUTES:
    for _t in _route.types:
        _KEY_OF[_route.detector][_t] = _route.key
for _adoption in ADOPTIONS:
    _KEY_OF[_adoption.owner][ADOPT] = _adoption.key
