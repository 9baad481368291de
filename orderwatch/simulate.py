"""`orderwatch simulate`: a realistic stream of whole order journeys with labelled anomalies.

Healthy journeys are built to stay inside every rule's window; each injected anomaly bends one
journey just past one rule and writes a label for every exception that rule (and any rule it
knowingly drags along) must open. Arrival order adds per-topic delivery skew, re-deliveries and
a few malformed lines, as a real Kafka feed would.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from orderwatch.detectors.ids import address_fingerprint
from orderwatch.schemas.events import TOPIC_OF_TYPE

__all__ = ["ANOMALIES", "PAYMENT_METHODS", "simulate"]

MIN = 60.0
HOUR = 3600.0
DAY = 86400.0
DEFAULT_START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()

# Seconds an event may reach its topic after it happened; all below the default lateness (60 s).
TOPIC_DELAY = {"orders": 4.0, "payments": 30.0, "inventory": 20.0, "logistics": 45.0}
PROVIDERS = ("stripe", "adyen", "paypal")
COUNTRIES = {
    "DE": ("{:05d}", 10000, 99999, "+49151{:08d}", ["Hauptstrasse", "Gartenweg", "Lindenallee"], "Berlin"),
    "FR": ("{:05d}", 10000, 95999, "+3361{:07d}", ["Rue de la Paix", "Avenue Victor Hugo"], "Lyon"),
    "NL": ("{:04d} AB", 1000, 9999, "+3161{:07d}", ["Kerkstraat", "Dorpsstraat"], "Utrecht"),
    "GB": ("SW1A {}AA", 1, 9, "+4474{:08d}", ["High Street", "Station Road"], "London"),
    "US": ("{:05d}", 10001, 99950, "+1201555{:04d}", ["Main Street", "Oak Avenue"], "Newark"),
}

# With --payment-methods: the share of orders paid each way (order.created's payment_method).
PAYMENT_METHODS: dict[str, float] = {"card": 0.55, "wallet": 0.25, "bank_transfer": 0.20}
# With --slow-method: healthy orders of that method are paid this many days after creation, as
# bank transfers and invoices are, instead of minutes.
SLOW_CLEARING_DAYS = (1.0, 4.0)

# Share of orders that carry each anomaly (the windowed/fraud ones are injected as whole groups).
ANOMALIES: dict[str, float] = {
    "PAYMENT_NOT_CONFIRMED": 0.004,
    "PAYMENT_TIMEOUT": 0.006,
    "DUPLICATE_PAYMENT": 0.003,
    "PAYMENT_AMOUNT_MISMATCH": 0.003,
    "PAYMENT_WITHOUT_ORDER": 0.003,
    "STOCK_RESERVATION_FAILED": 0.003,
    "STOCK_NOT_RESERVED": 0.003,
    "SHIPMENT_NOT_CREATED": 0.004,
    "TRACKING_STALLED": 0.004,
    "DELIVERY_OVERDUE": 0.004,
    "DELIVERY_FAILED": 0.004,
    "INVALID_SHIPPING_INFO": 0.004,
    "DUPLICATE_ORDER": 0.003,
    "CANCEL_NOT_PROCESSED": 0.003,
    "SHIPPED_AFTER_CANCEL": 0.002,
    "REFUND_OVERDUE": 0.003,
    "REFUND_FAILED": 0.003,
    "REFUND_EXCEEDS_PAYMENT": 0.002,
    "ORDER_STUCK": 0.003,
    "BLOCKLISTED_ORDER": 0.002,
}


@dataclass
class Customer:
    cid: str
    since: float
    country: str
    address: dict[str, str]
    phone: str
    last_order: float = -1e18


@dataclass
class Order:
    oid: str
    t0: float
    customer: Customer
    items: list[tuple[str, int, Decimal]]
    total: Decimal
    anomaly: str | None = None
    address: dict[str, str] | None = None
    promise_days: float = 6.0
    ship_by: float | None = None
    provider: str = "stripe"
    payment_method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Sim:
    def __init__(self, seed: int, start: float, payment_methods: bool = False, slow_method: str | None = None) -> None:
        self.rng = random.Random(seed)
        # Payment methods draw from their own generator: the stream without them stays the very
        # stream the docs and tests quote, and with them it differs only where methods matter.
        self.methods_rng = random.Random(seed * 1_000_003 + 17) if payment_methods or slow_method else None
        self.slow_method = slow_method
        self.start = start
        self.events: list[tuple[float, int, str]] = []  # malformed lines, placed as they are
        self._pending: list[tuple[float, int, str, str, str]] = []
        self.labels: list[dict[str, Any]] = []
        self.blocklist: list[dict[str, Any]] = []
        self.customers: list[Customer] = []
        self.skus = [(f"SKU-{i:04d}", Decimal(self.rng.randrange(299, 19999)) / 100) for i in range(400)]
        self.seq = 0
        self.n_orders = 0
        self.last_time = start
        self.duplicates = 0
        self.malformed = 0
        self.reserved: dict[tuple[str, str], int] = {}

    # -- primitives ---------------------------------------------------------------------------
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ts(self, t: float) -> str:
        dt = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
        return dt.replace("+00:00", "Z") if self.seq % 7 == 0 else dt

    def emit(self, type_: str, subject: str, t: float, data: dict[str, Any]) -> None:
        # Half a second of jitter keeps event times distinct, so ties never decide an outcome.
        t = round(t + self.rng.random() * 0.5, 3)
        topic = TOPIC_OF_TYPE[type_]
        self.seq += 1
        line = json.dumps(
            {
                "specversion": "1.0",
                "id": self.uid(),
                "source": f"/{topic}-service",
                "type": type_,
                "time": self.ts(t),
                "subject": subject,
                "datacontenttype": "application/json",
                "data": data,
            },
            separators=(",", ":"),
        )
        self._pending.append((t, self.seq, topic, subject, line))
        self.last_time = max(self.last_time, t)

    def arrivals(self) -> list[tuple[float, int, str]]:
        """Arrival order: each event reaches its topic a random delay after it happened, events of
        one key on one topic keep their order (Kafka's guarantee), and some are delivered twice."""
        rng = self.rng
        last: dict[tuple[str, str], float] = {}
        out = list(self.events)
        for t, seq, topic, subject, line in sorted(self._pending):
            key = (topic, subject)
            arrival = max(t + rng.random() * TOPIC_DELAY[topic], last.get(key, t) + 0.001)
            last[key] = arrival
            out.append((arrival, seq, line))
            if rng.random() < 0.005:  # an at-least-once re-delivery, seconds to minutes later
                self.duplicates += 1
                out.append((arrival + rng.uniform(1, 900), seq, line))
        out.sort()
        return out

    def label(self, rule: str, subject: str, order_id: str | None = None) -> None:
        self.labels.append({"rule": rule, "subject": subject, "order_id": order_id})

    def malformed_line(self, t: float) -> None:
        self.malformed += 1
        self.seq += 1
        kind = self.rng.randrange(4)
        good = {
            "specversion": "1.0",
            "id": self.uid(),
            "source": "/orders-service",
            "type": "order.cancelled",
            "time": self.ts(t),
            "subject": "o-x",
            "data": {"order_id": "o-x", "reason": "customer"},
        }
        if kind == 0:
            line = '{"specversion": "1.0", "id": "' + self.uid() + '", "type": "order.creat'
        elif kind == 1:
            line = json.dumps({**good, "type": "order.teleported"})
        elif kind == 2:
            line = json.dumps({**good, "data": {"reason": "customer"}})
        else:
            line = json.dumps({**good, "time": datetime.fromtimestamp(t, UTC).replace(tzinfo=None).isoformat()})
        self.events.append((t, self.seq, line))

    # -- the cast -------------------------------------------------------------------------------
    def new_customer(self, t: float, age_days: float | None = None) -> Customer:
        rng = self.rng
        country = rng.choice(list(COUNTRIES))
        fmt, lo, hi, phone_fmt, streets, city = COUNTRIES[country]
        cid = f"c-{len(self.customers) + 1:06d}"
        address = {
            "recipient": f"Customer {cid[2:]}",
            "line1": f"{rng.randrange(1, 400)} {rng.choice(streets)} {cid[2:]}",
            "city": city,
            "postal_code": fmt.format(rng.randrange(lo, hi)),
            "country": country,
        }
        digits = {"DE": 8, "FR": 7, "NL": 7, "GB": 8, "US": 4}[country]
        phone = phone_fmt.format(rng.randrange(10 ** (digits - 1), 10**digits))
        age = age_days if age_days is not None else rng.uniform(10, 1000)
        cust = Customer(cid, t - age * DAY, country, address, phone)
        self.customers.append(cust)
        return cust

    def pick_customer(self, t: float) -> Customer:
        # Repeat customers come back at least two hours later, far outside DUPLICATE_ORDER's window.
        if self.customers and self.rng.random() < 0.4:
            cust = self.rng.choice(self.customers[-2000:])
            if t - cust.last_order > 2 * HOUR and not cust.cid.startswith("c-blk"):
                return cust
        return self.new_customer(t, age_days=self.rng.choice([None, None, None, self.rng.uniform(1, 6)]))

    def make_order(
        self,
        t0: float,
        customer: Customer,
        items: list[tuple[str, int, Decimal]] | None = None,
        anomaly: str | None = None,
    ) -> Order:
        rng = self.rng
        self.n_orders += 1
        if items is None:
            items = [(sku, rng.randrange(1, 4), price) for sku, price in rng.sample(self.skus, rng.randrange(1, 4))]
        total = sum((q * p for _, q, p in items), Decimal("0"))
        customer.last_order = max(customer.last_order, t0)
        order = Order(f"o-{self.n_orders:07d}", t0, customer, items, total, anomaly, provider=rng.choice(PROVIDERS))
        if self.methods_rng is not None:
            names = list(PAYMENT_METHODS)
            order.payment_method = self.methods_rng.choices(names, [PAYMENT_METHODS[n] for n in names])[0]
        return order

    # -- journey stages ---------------------------------------------------------------------------
    def created(self, o: Order, t: float) -> None:
        c = o.customer
        data: dict[str, Any] = {
            "order_id": o.oid,
            "customer_id": c.cid,
            "customer_since": self.ts(c.since),
            "merchant_id": f"m-{int(o.oid[2:]) % 7 + 1}",
            "channel": self.rng.choice(["web", "web", "app", "marketplace"]),
            "items": [{"sku": s, "quantity": q, "unit_price": str(p)} for s, q, p in o.items],
            "total_amount": str(o.total),
            "currency": "EUR",
            "shipping_address": o.address or c.address,
            "contact_phone": o.extra.get("phone", c.phone),
            "promised_delivery_by": self.ts(o.t0 + o.promise_days * DAY),
        }
        if o.ship_by is not None:
            data["promised_ship_by"] = self.ts(o.ship_by)
        if o.payment_method is not None:
            data["payment_method"] = o.payment_method
        self.emit("order.created", o.oid, t, data)

    def reserve(self, o: Order, t: float, fail_sku: str | None = None) -> None:
        for i, (sku, q, _) in enumerate(o.items):
            wh = o.extra.get("wh") or ("W1" if (int(o.oid[2:]) + i) % 3 else "W2")
            if sku == fail_sku:
                self.emit(
                    "inventory.reservation_failed",
                    sku,
                    t + i,
                    {"sku": sku, "warehouse_id": wh, "order_id": o.oid, "quantity": q, "reason": "out_of_stock"},
                )
                continue
            self.reserved[(sku, wh)] = self.reserved.get((sku, wh), 0) + q
            self.emit(
                "inventory.reserved", sku, t + i, {"sku": sku, "warehouse_id": wh, "order_id": o.oid, "quantity": q}
            )

    def release(self, o: Order, t: float) -> None:
        for i, (sku, q, _) in enumerate(o.items):
            wh = o.extra.get("wh") or ("W1" if (int(o.oid[2:]) + i) % 3 else "W2")
            self.emit(
                "inventory.released", sku, t + i, {"sku": sku, "warehouse_id": wh, "order_id": o.oid, "quantity": q}
            )

    def pay(self, o: Order, t: float, amount: Decimal | None = None, provider: str | None = None) -> str:
        pid = f"pay-{self.uid()[:12]}"
        # Drawn even when the order names its method, so the stream's randomness does not shift.
        method = self.rng.choice(["card", "wallet", "sepa"])
        self.emit(
            "payment.succeeded",
            o.oid,
            t,
            {
                "order_id": o.oid,
                "payment_id": pid,
                "amount": str(o.total if amount is None else amount),
                "currency": "EUR",
                "provider": provider or o.provider,
                "method": o.payment_method or method,
            },
        )
        return pid

    def fail_payment(self, o: Order, t: float, provider: str) -> None:
        self.emit(
            "payment.failed",
            o.oid,
            t,
            {
                "order_id": o.oid,
                "payment_id": f"pay-{self.uid()[:12]}",
                "amount": str(o.total),
                "currency": "EUR",
                "provider": provider,
                "reason_code": self.rng.choice(["card_declined", "insufficient_funds", "timeout"]),
            },
        )

    def status(self, o: Order, t: float, value: str) -> None:
        self.emit("order.status_changed", o.oid, t, {"order_id": o.oid, "status": value})

    def refund(self, o: Order, t: float, amount: Decimal, settle_after: float | None, fail_first: bool = False) -> None:
        rid = f"ref-{self.uid()[:12]}"
        self.emit(
            "refund.requested",
            o.oid,
            t,
            {"order_id": o.oid, "refund_id": rid, "amount": str(amount), "currency": "EUR", "reason": "return"},
        )
        if fail_first:
            self.emit(
                "refund.failed",
                o.oid,
                t + 20 * MIN,
                {"order_id": o.oid, "refund_id": rid, "reason_code": "account_closed"},
            )
        if settle_after is not None:
            self.emit(
                "refund.succeeded",
                o.oid,
                t + settle_after,
                {"order_id": o.oid, "refund_id": rid, "amount": str(amount), "currency": "EUR"},
            )

    def ship(
        self,
        o: Order,
        t: float,
        *,
        stall: float | None = None,
        exception: str | None = None,
        deliver_by: float | None = None,
        close: bool = True,
    ) -> float:
        """shipment.created at t, tracking updates under 3 days apart, delivered; returns the delivery time."""
        rng = self.rng
        sid = f"shp-{o.oid[2:]}"
        self.emit(
            "shipment.created",
            o.oid,
            t,
            {
                "order_id": o.oid,
                "shipment_id": sid,
                "carrier": rng.choice(["dhl", "ups", "dpd"]),
                "tracking_number": f"TRK{rng.randrange(10**9, 10**10)}",
            },
        )
        self.status(o, t + 60, "shipped")
        deliver_at = deliver_by if deliver_by is not None else t + rng.uniform(1, 3.2) * DAY
        cursor = t
        while deliver_at - cursor > 2 * DAY:
            cursor += rng.uniform(0.5, 1.8) * DAY
            self.emit(
                "shipment.tracking_updated",
                o.oid,
                cursor,
                {
                    "order_id": o.oid,
                    "shipment_id": sid,
                    "status": "in_transit",
                    "location": rng.choice(["hub-1", "hub-2", "depot"]),
                },
            )
            if stall is not None:
                cursor += stall  # the one long silence of a TRACKING_STALLED journey
                deliver_at = max(deliver_at, cursor + 0.5 * DAY)
                self.emit(
                    "shipment.tracking_updated",
                    o.oid,
                    cursor,
                    {"order_id": o.oid, "shipment_id": sid, "status": "in_transit"},
                )
                stall = None
            if exception is not None:
                self.emit(
                    "shipment.exception",
                    o.oid,
                    cursor + HOUR,
                    {"order_id": o.oid, "shipment_id": sid, "reason": exception},
                )
                exception = None
        if exception is not None:
            self.emit(
                "shipment.exception",
                o.oid,
                (cursor + deliver_at) / 2,
                {"order_id": o.oid, "shipment_id": sid, "reason": exception},
            )
        if stall is not None:  # short trip: the stall sits between the last update and delivery
            cursor += stall
            deliver_at = max(deliver_at, cursor + HOUR)
            self.emit(
                "shipment.tracking_updated",
                o.oid,
                cursor,
                {"order_id": o.oid, "shipment_id": sid, "status": "in_transit"},
            )
        self.emit("shipment.delivered", o.oid, deliver_at, {"order_id": o.oid, "shipment_id": sid})
        if close:
            self.status(o, deliver_at + 120, "delivered")
        return deliver_at

    # -- journeys ---------------------------------------------------------------------------------
    def journey(self, o: Order) -> None:
        """One order from creation to a terminal status, bent by `o.anomaly` if any."""
        rng, a, t0, oid = self.rng, o.anomaly, o.t0, o.oid
        # "plain" journeys take no random detours (cancellations, split tenders, returns).
        odds = 0.0 if o.extra.get("plain") else 1.0
        delay = self._clearing_delay(o)
        o.promise_days += delay / DAY
        if a == "DELIVERY_OVERDUE":
            o.promise_days = 2.5
        if a == "TRACKING_STALLED":
            o.promise_days = 12.0
        if a == "SHIPMENT_NOT_CREATED" and rng.random() < 0.5:
            o.ship_by = t0 + rng.uniform(20, 30) * HOUR
        if a == "INVALID_SHIPPING_INFO":
            if rng.random() < 0.5:
                o.address = {**o.customer.address, "postal_code": "??"}
            else:
                o.extra["phone"] = "12"
        if a == "PAYMENT_WITHOUT_ORDER":
            # The order service lags: payment, reservation and status land long before order.created.
            p = t0
            self.pay(o, p)
            self.reserve(o, p + 30)
            self.status(o, p + 90, "paid")
            self.created(o, p + rng.uniform(20, 50) * MIN)
            self.label(a, oid, oid)
            self.ship(o, p + rng.uniform(3, 30) * HOUR)
            return
        self.created(o, t0)
        if a == "INVALID_SHIPPING_INFO":
            self.label(a, oid, oid)
            self.emit(
                "order.address_updated",
                oid,
                t0 + rng.uniform(1, 6) * HOUR,
                {"order_id": oid, "shipping_address": o.customer.address, "contact_phone": o.customer.phone},
            )
        if a == "STOCK_NOT_RESERVED":
            pass  # no reservation now: it comes late, after the payment, below
        elif a == "STOCK_RESERVATION_FAILED":
            self.reserve(o, t0 + 5, fail_sku=o.items[0][0])
            self.label(a, oid, oid)
            sku, q, _ = o.items[0]
            self.emit(
                "inventory.reserved",
                sku,
                t0 + rng.uniform(10, 40) * MIN,
                {"sku": sku, "warehouse_id": "W2", "order_id": oid, "quantity": q},
            )
        else:
            self.reserve(o, t0 + rng.uniform(1, 20))
        if a == "DUPLICATE_ORDER":
            self._duplicate_order(o)
        if a == "PAYMENT_TIMEOUT":
            self.label(a, oid, oid)
            cancel = t0 + rng.uniform(2, 6) * HOUR
            self.emit("order.cancelled", oid, cancel, {"order_id": oid, "reason": "unpaid"})
            self.release(o, cancel + 5)
            return
        # Payment: sometimes a failed attempt first, sometimes split across two tenders.
        p = t0 + rng.uniform(0.5, 8) * MIN + delay
        if o.extra.get("spike_fail") is not None:
            self.fail_payment(o, o.extra["spike_fail"], o.provider)
            p = o.extra["spike_fail"] + rng.uniform(6, 9) * MIN
            o.provider = rng.choice([x for x in PROVIDERS if x != o.extra["spike_provider"]])
        elif rng.random() < 0.03 * odds:
            self.fail_payment(o, p - 20, o.provider)
        last_pay = p
        if a == "PAYMENT_AMOUNT_MISMATCH":
            short = Decimal(rng.randrange(100, 500)) / 100
            self.pay(o, p, o.total - short if o.total > short else o.total + short)
            self.label(a, oid, oid)
            fix = p + rng.uniform(1, 3) * HOUR
            if o.total > short:
                self.pay(o, fix, short)
            else:
                self.refund(o, fix, short, settle_after=HOUR)
        elif rng.random() < 0.05 * odds and o.total > 2:
            part = (o.total / 2).quantize(Decimal("0.01"))
            self.pay(o, p, part)
            last_pay = p + rng.uniform(0.5, 3) * MIN
            self.pay(o, last_pay, o.total - part, provider=rng.choice(PROVIDERS))
        else:
            self.pay(o, p)
        if a == "DUPLICATE_PAYMENT":
            self.pay(o, last_pay + rng.uniform(1, 9) * MIN)
            self.label(a, oid, oid)
            self.refund(o, last_pay + rng.uniform(2, 8) * HOUR, o.total, settle_after=rng.uniform(1, 6) * HOUR)
        if a == "STOCK_NOT_RESERVED":
            self.label(a, oid, oid)
            self.reserve(o, p + rng.uniform(20, 60) * MIN)
        status_at = last_pay + rng.uniform(5, 120)
        if a == "PAYMENT_NOT_CONFIRMED":
            status_at = p + rng.uniform(10, 50) * MIN
            self.label(a, oid, oid)
        self.status(o, status_at, "paid")
        if a in ("CANCEL_NOT_PROCESSED", "SHIPPED_AFTER_CANCEL") or (a is None and rng.random() < 0.04 * odds):
            req = status_at + rng.uniform(0.2, 3) * HOUR
            self.emit("order.cancel_requested", oid, req, {"order_id": oid, "reason": "changed_mind"})
            done = req + (rng.uniform(45, 100) if a == "CANCEL_NOT_PROCESSED" else rng.uniform(1, 20)) * MIN
            if a == "CANCEL_NOT_PROCESSED":
                self.label(a, oid, oid)
            self.emit("order.cancelled", oid, done, {"order_id": oid, "reason": "changed_mind"})
            self.release(o, done + 10)
            self.refund(o, done + rng.uniform(5, 60) * MIN, o.total, settle_after=rng.uniform(1, 12) * HOUR)
            if a == "SHIPPED_AFTER_CANCEL":
                self.label(a, oid, oid)
                self.emit(
                    "shipment.created",
                    oid,
                    done + rng.uniform(1, 5) * HOUR,
                    {"order_id": oid, "shipment_id": f"shp-{oid[2:]}", "carrier": "dhl", "tracking_number": "TRK1"},
                )
            return
        self.status(o, status_at + rng.uniform(10, 60) * MIN, "allocated")
        ship_at = status_at + rng.uniform(2, 30) * HOUR
        if o.ship_by is not None:
            ship_at = min(ship_at, o.ship_by - HOUR)
        if a == "SHIPMENT_NOT_CREATED":
            ship_at = (o.ship_by if o.ship_by is not None else p + 48 * HOUR) + rng.uniform(2, 12) * HOUR
            self.label(a, oid, oid)
        kwargs: dict[str, Any] = {}
        if a == "TRACKING_STALLED":
            kwargs["stall"] = rng.uniform(3.3, 4.5) * DAY
            self.label(a, oid, oid)
        if a == "DELIVERY_FAILED":
            kwargs["exception"] = rng.choice(["lost", "damaged", "refused", "address_invalid", "failed_attempt"])
            self.label(a, oid, oid)
        if a == "DELIVERY_OVERDUE":
            kwargs["deliver_by"] = t0 + rng.uniform(3.0, 3.8) * DAY
            self.label(a, oid, oid)
        if a == "ORDER_STUCK":
            kwargs["close"] = False
        delivered = self.ship(o, ship_at, **kwargs)
        if a == "ORDER_STUCK":
            # Delivered, but the order system never closed it: only ORDER_STUCK can notice.
            self.label(a, oid, oid)
            self.status(o, delivered + rng.uniform(7.5, 9) * DAY, "completed")
            return
        if a in ("REFUND_OVERDUE", "REFUND_FAILED", "REFUND_EXCEEDS_PAYMENT") or (
            a is None and rng.random() < 0.03 * odds
        ):
            r = delivered + rng.uniform(2, 30) * HOUR
            if a == "REFUND_OVERDUE":
                self.refund(o, r, o.total, settle_after=rng.uniform(26, 40) * HOUR)
            elif a == "REFUND_FAILED":
                self.refund(o, r, o.total, settle_after=rng.uniform(2, 20) * HOUR, fail_first=True)
            elif a == "REFUND_EXCEEDS_PAYMENT":
                self.refund(o, r, o.total, settle_after=2 * HOUR)
                self.refund(o, r + 3 * HOUR, Decimal(rng.randrange(500, 3000)) / 100, settle_after=2 * HOUR)
            else:
                self.refund(o, r, (o.total / 2).quantize(Decimal("0.01")), settle_after=rng.uniform(1, 20) * HOUR)
            if a is not None:
                self.label(a, oid, oid)

    def _clearing_delay(self, o: Order) -> float:
        """Seconds a slow method's payment takes beyond the usual minutes: only for healthy
        journeys (an injected anomaly keeps the timing its label was written for)."""
        if self.methods_rng is None or o.payment_method is None or o.payment_method != self.slow_method:
            return 0.0
        if o.anomaly is not None or o.extra.get("plain") or o.extra.get("spike_fail") is not None:
            return 0.0
        return self.methods_rng.uniform(*SLOW_CLEARING_DAYS) * DAY

    def _duplicate_order(self, o: Order) -> None:
        """The customer clicks 'buy' twice: a second order with the same items minutes later,
        which the shop cancels before it is paid."""
        rng = self.rng
        dup = self.make_order(o.t0 + rng.uniform(1, 8) * MIN, o.customer, items=list(o.items))
        self.created(dup, dup.t0)
        self.reserve(dup, dup.t0 + 3)
        self.label("DUPLICATE_ORDER", dup.oid, dup.oid)
        cancel = dup.t0 + rng.uniform(5, 20) * MIN
        self.emit("order.cancelled", dup.oid, cancel, {"order_id": dup.oid, "reason": "duplicate"})
        self.release(dup, cancel + 5)

    # -- group anomalies ----------------------------------------------------------------------------
    def address_cluster(self, t: float) -> None:
        """Six orders from four accounts to one drop address within half a day."""
        drop = {
            "recipient": "Parcel Station",
            "line1": f"{self.rng.randrange(1, 99)} Industriestrasse",
            "city": "Berlin",
            "postal_code": "12435",
            "country": "DE",
        }
        custs = [self.new_customer(t) for _ in range(4)]
        for i in range(6):
            o = self.make_order(t + i * self.rng.uniform(20, 120) * MIN, custs[i % 4])
            o.address = drop
            self.journey(o)
        self.label("ADDRESS_CLUSTER", address_fingerprint(drop["line1"], drop["postal_code"], drop["country"]))

    def new_account_burst(self, t: float) -> None:
        cust = self.new_customer(t, age_days=self.rng.uniform(0.5, 5))
        for i in range(6):
            sku, price = self.skus[(i * 37 + int(t)) % len(self.skus)]
            o = self.make_order(t + i * self.rng.uniform(3, 8) * MIN, cust, items=[(sku, i + 1, price)])
            self.journey(o)
        self.label("NEW_ACCOUNT_BURST", cust.cid)

    def blocklisted(self, t: float) -> None:
        cust = self.new_customer(t)
        cust.cid = f"c-blk{len(self.blocklist):04d}"
        self.blocklist.append(
            {
                "key": f"customer:{cust.cid}",
                "value": {"reason": "chargeback_fraud", "added_at": self.ts(self.start - DAY)},
            }
        )
        o = self.make_order(t, cust)
        self.journey(o)
        self.label("BLOCKLISTED_ORDER", o.oid, o.oid)

    def failure_spike(self, t: float) -> None:
        provider = self.rng.choice(PROVIDERS)
        window = t - t % 300 + 300
        for _ in range(30):
            o = self.make_order(window - self.rng.uniform(30, 240), self.pick_customer(window))
            o.provider = provider
            o.extra.update(spike_fail=window + self.rng.uniform(5, 280), spike_provider=provider)
            self.journey(o)
        self.label("PAYMENT_FAILURE_SPIKE", provider)

    def oversold(self, t: float, k: int) -> None:
        """A SKU whose warehouse count was wrong: two on hand, three sold, then a restock."""
        sku, price = f"SKU-OS{k:03d}", Decimal("49.00")
        self.emit("inventory.level_reported", sku, t, {"sku": sku, "warehouse_id": "W1", "on_hand": 2, "reserved": 0})
        for i in range(3):
            o = self.make_order(t + (i + 1) * 10 * MIN, self.pick_customer(t))
            o.items = [(sku, 1, price)]
            o.total = price
            o.extra.update(plain=True, wh="W1")
            self.journey(o)
        self.emit(
            "inventory.level_reported",
            sku,
            t + 6 * HOUR,
            {"sku": sku, "warehouse_id": "W1", "on_hand": 12, "reserved": 3},
        )
        self.label("STOCK_OVERSOLD", sku)

    def snapshots(self, t: float) -> None:
        for sku, _ in self.skus:
            for wh in ("W1", "W2"):
                self.emit(
                    "inventory.level_reported",
                    sku,
                    t + self.rng.uniform(0, 600),
                    {"sku": sku, "warehouse_id": wh, "on_hand": 1_000_000, "reserved": self.reserved.get((sku, wh), 0)},
                )


def simulate(
    *,
    orders: int,
    seed: int,
    output: Path,
    labels: Path,
    blocklist: Path,
    start: float | None = None,
    progress: Callable[[str], None] | None = None,
    payment_methods: bool = False,
    slow_method: str | None = None,
) -> dict[str, Any]:
    """Write the stream, the labels and the blocklist; returns counts for the caller to report.
    `payment_methods` adds `payment_method` to order.created; `slow_method` (implies it) makes
    that method's healthy orders clear in days."""
    if slow_method is not None and slow_method not in PAYMENT_METHODS:
        msg = f"slow method {slow_method!r}: expected one of {', '.join(PAYMENT_METHODS)}"
        raise ValueError(msg)
    t_start = start if start is not None else DEFAULT_START
    sim = _Sim(seed, t_start, payment_methods, slow_method)
    rng = sim.rng
    sim.snapshots(t_start - HOUR)
    # Orders arrive as a Poisson process: about ten a minute.
    gap = 6.0
    t = t_start
    groups = max(1, orders // 8000)
    group_at = {int(orders * (i + 0.5) / groups) for i in range(groups)}
    anomaly_codes = list(ANOMALIES)
    weights = [ANOMALIES[c] for c in anomaly_codes]
    p_anomaly = sum(weights)
    next_snapshot = t_start + 12 * HOUR
    while sim.n_orders < orders:
        t += rng.expovariate(1 / gap)
        if t > next_snapshot:
            sim.snapshots(next_snapshot)
            next_snapshot += 12 * HOUR
        if sim.n_orders in group_at:
            group_at.discard(sim.n_orders)
            k = len(sim.labels)
            sim.address_cluster(t)
            sim.new_account_burst(t + HOUR)
            sim.failure_spike(t + 2 * HOUR)
            sim.oversold(t + 3 * HOUR, k)
            for _ in range(3):
                sim.blocklisted(t + rng.uniform(0, 3) * HOUR)
            continue
        anomaly = rng.choices(anomaly_codes, weights)[0] if rng.random() < p_anomaly else None
        if anomaly == "BLOCKLISTED_ORDER":
            sim.blocklisted(t)
            continue
        o = sim.make_order(t, sim.pick_customer(t), anomaly=anomaly)
        sim.journey(o)
        if rng.random() < 0.0002:
            sim.malformed_line(t)
        if progress is not None and sim.n_orders % 10_000 == 0:
            progress(f"{sim.n_orders:,} orders")
    # The stream goes on after the last order (inventory snapshots keep coming), long enough for
    # every deadline of the journeys above to pass.
    horizon = sim.last_time + 2 * DAY
    snap = next_snapshot
    while snap < horizon:
        sim.snapshots(snap)
        snap += 12 * HOUR
    for _ in range(max(4, orders // 5000)):
        sim.malformed_line(t_start + rng.uniform(0, horizon - t_start))
    lines = sim.arrivals()
    opener: Any = gzip.open if str(output).endswith(".gz") else open
    with opener(output, "wt", encoding="utf-8") as fh:
        _write_lines(fh, (line for _, _, line in lines))
    with open(labels, "w", encoding="utf-8") as fh:
        _write_lines(fh, (json.dumps(lab) for lab in sim.labels))
    with open(blocklist, "w", encoding="utf-8") as fh:
        _write_lines(fh, (json.dumps(b) for b in sim.blocklist))
    return {
        "lines": len(lines),
        "orders": sim.n_orders,
        "anomalies": len(sim.labels),
        "duplicates": sim.duplicates,
        "malformed": sim.malformed,
        "last_event": datetime.fromtimestamp(sim.last_time, UTC).isoformat(),
    }


def _write_lines(fh: IO[str], lines: Any) -> None:
    for line in lines:
        fh.write(line)
        fh.write("\n")
