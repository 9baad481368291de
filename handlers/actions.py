"""Actions: a case change becomes commands on `order-actions` (and entries on `blocklist`), run at
once or after a person's approval as the policy says; dedupe, attempt caps and approvals in Redis.

Redis keys (all under the handlers' prefix):
- `action:<exception_id>:<action>`: hash, one per idempotency key: `state` (pending_approval,
  sending, sent, dry_run, capped, rejected, withdrawn), `attempts`, `command` (the CloudEvent JSON),
  `kafka_key`, `blocklist_key`, `reason`, `requested_at`/`sent_at`/`decided_at` (ms), `approved_by`,
  `decided_by`, `note`, `lease_until` (ms). Finished ones expire after `retention_seconds`.
- `actions:pending`: sorted set of the idempotency keys waiting for approval, by request time (ms).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orderwatch.errors import CaseNotFound, DeliveryError, StoreUnavailable, TransitionError
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.metrics import NO_METRICS, HandlerMetrics
from orderwatch.handlers.policy import BLOCKLIST_ACTIONS, ActionPolicy
from orderwatch.schemas.action_command import ActionCommand, ActionData, ActionParams, idempotency_key
from orderwatch.schemas.exception_event import ExceptionData

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from redis.asyncio import Redis


__all__ = [
    "ActionDispatcher",
    "ActionSink",
    "DryRunSink",
    "KafkaActionSink",
    "PendingAction",
    "Planned",
    "candidate_actions",
    "plan",
]

log = logging.getLogger(__name__)

Decision = Literal["auto", "approval", "skip", "capped"]

# Evidence keys copied into a command's params: ids and codes only, so no personal data can ride
# along whatever the detectors add to evidence later.
_STR_FIELDS = (
    "payment_id",
    "refund_id",
    "shipment_id",
    "carrier",
    "provider",
    "sku",
    "warehouse_id",
    "customer_id",
    "address_fingerprint",
    "earlier_order_id",
    "currency",
)
_LIST_FIELDS = ("order_ids", "payment_ids", "refund_ids", "problems")
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Which evidence figure is "the amount" of each action that concerns money.
_AMOUNT_FIELD = {
    "refund_duplicate_payment": "amount",
    "expedite_refund": "amount",
    "retry_refund": "amount",
    "review_payment_amount": "difference",
    "block_refund_and_review": "refunds",
    "remind_customer_to_pay": "order_total",
}


@dataclass(frozen=True, slots=True)
class Planned:
    """One action the planner decided on for a case change."""

    action: str
    decision: Decision
    """auto: send now; approval: wait for a person; skip: the policy turns it off; capped: out of attempts."""
    reason: str
    """Why (bounded): policy, off, over_max_amount, amount_unknown, max_attempts."""
    command: ActionCommand
    """The command as it would be sent (mode auto; approval fills in mode and approver)."""
    key: str
    """Kafka key on `order-actions`: the order id, else the exception's subject."""
    blocklist_key: str | None = None
    """`customer:<id>` / `address:<fingerprint>` for blocklist actions, which go to `blocklist` instead."""
    amount: Decimal | None = None


def candidate_actions(data: ExceptionData) -> list[str]:
    """The action codes an exception asks for: its recommended action, plus the blocklist action
    of the fraud rules that name a customer or an address."""
    codes = [data.recommended_action]
    extra = BLOCKLIST_ACTIONS.get(data.rule)
    if extra is not None and extra not in codes:
        codes.append(extra)
    return codes


def _amount(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _params(action: str, data: ExceptionData) -> ActionParams:
    ev = data.evidence
    if action == "blocklist_customer":
        return ActionParams(customer_id=str(ev.get("customer_id") or data.subject))
    if action == "blocklist_address":
        return ActionParams(address_fingerprint=str(ev.get("address_fingerprint") or data.subject))
    fields: dict[str, Any] = {}
    for name in _STR_FIELDS:
        value = ev.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            fields[name] = str(value)
    for name in _LIST_FIELDS:
        value = ev.get(name)
        if isinstance(value, list):
            fields[name] = [str(v) for v in value if isinstance(v, str | int)]
    quantity = ev.get("quantity")
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        fields["quantity"] = quantity
    for name in ("reason_code", "reason"):
        # Codes only: a free-text reason could quote anything.
        value = ev.get(name)
        if isinstance(value, str) and _CODE.match(value):
            fields["reason"] = value
            break
    if action in _AMOUNT_FIELD:
        fields["amount"] = _amount(ev.get(_AMOUNT_FIELD[action]))
    return ActionParams(**fields)


def _decide(action: str, amount: Decimal | None, policy: ActionPolicy, attempts: int) -> tuple[Decision, str]:
    rule = policy.rule(action)
    if rule.mode == "off":
        return "skip", "off"
    if attempts >= rule.max_attempts:
        return "capped", "max_attempts"
    if rule.mode == "approval":
        return "approval", "policy"
    if rule.max_amount is not None:
        if amount is None:
            return "approval", "amount_unknown"
        if abs(amount) > rule.max_amount:
            return "approval", "over_max_amount"
    return "auto", "policy"


def plan(change: CaseChange, policy: ActionPolicy, attempts: Mapping[str, int] | None = None) -> list[Planned]:
    """The actions a case change asks for, each with its decision. Pure: `attempts` are the
    delivery tries already made per action code for this case (from the store)."""
    if change.kind != "opened":
        return []
    data = change.data
    out = []
    for action in candidate_actions(data):
        params = _params(action, data)
        blocklist_key = None
        if action == "blocklist_customer":
            blocklist_key = f"customer:{params.customer_id}"
        elif action == "blocklist_address":
            blocklist_key = f"address:{params.address_fingerprint}"
        decision, reason = _decide(action, params.amount, policy, (attempts or {}).get(action, 0))
        ikey = idempotency_key(data.exception_id, action)
        key = data.order_id or data.subject
        command = ActionCommand(
            id=ikey,
            type="action.requested",
            time=change.at,
            subject=key,
            data=ActionData(
                action=action,
                idempotency_key=ikey,
                exception_id=data.exception_id,
                rule=data.rule,
                order_id=data.order_id,
                params=params,
                mode="auto",
                requested_at=change.at,
            ),
        )
        out.append(Planned(action, decision, reason, command, key, blocklist_key, params.amount))
    return out


class ActionSink(Protocol):
    """Where commands go: Kafka, or the log in a dry run."""

    @property
    def dry_run(self) -> bool: ...

    async def send_command(self, command: ActionCommand, key: str) -> None:
        """Publish on `order-actions`; raise DeliveryError when the broker did not take it."""

    async def send_blocklist(self, key: str, entry: Mapping[str, str], command: ActionCommand) -> None:
        """Publish a blocklist entry on `blocklist` (compacted, key `customer:<id>`/`address:<fp>`)."""


class TopicNames(Protocol):
    """Where the sinks publish: the full name of a topic (the settings' prefix applied)."""

    def topic(self, name: str) -> str: ...


def _wire(command: ActionCommand) -> bytes:
    return command.model_dump_json(exclude_none=True).encode()


class KafkaActionSink:
    """Publishes with a started producer (the caller owns it; acks=all is advised)."""

    dry_run = False

    def __init__(self, producer: AIOKafkaProducer, settings: TopicNames) -> None:
        self._producer = producer
        self.actions_topic = settings.topic("order-actions")
        self.blocklist_topic = settings.topic("blocklist")

    async def _send(self, topic: str, key: str, value: bytes, what: str) -> None:
        try:
            await self._producer.send_and_wait(topic, value=value, key=key.encode())
        except KafkaError as exc:
            msg = f"{what} not delivered to {topic}: {type(exc).__name__}"
            raise DeliveryError(msg) from exc

    async def send_command(self, command: ActionCommand, key: str) -> None:
        await self._send(self.actions_topic, key, _wire(command), f"command {command.id}")

    async def send_blocklist(self, key: str, entry: Mapping[str, str], command: ActionCommand) -> None:
        await self._send(self.blocklist_topic, key, json.dumps(dict(entry)).encode(), f"command {command.id}")


class DryRunSink:
    """Logs what would be sent and sends nothing. Logs name the action, the idempotency key and the
    param names, never their values (an order's params may one day carry personal data)."""

    dry_run = True

    def __init__(self, settings: TopicNames | None = None) -> None:
        self.actions_topic = settings.topic("order-actions") if settings else "order-actions"
        self.blocklist_topic = settings.topic("blocklist") if settings else "blocklist"

    async def send_command(self, command: ActionCommand, key: str) -> None:
        params = sorted(command.data.params.model_dump(exclude_none=True))
        log.info(
            "dry run: would send %s (%s, mode %s) to %s with params %s",
            command.data.action,
            command.id,
            command.data.mode,
            self.actions_topic,
            ",".join(params) or "-",
        )

    async def send_blocklist(self, key: str, entry: Mapping[str, str], command: ActionCommand) -> None:
        log.info("dry run: would add a %s entry to %s (%s)", key.split(":", 1)[0], self.blocklist_topic, command.id)


@dataclass(frozen=True, slots=True)
class PendingAction:
    """An action waiting for a person's approval."""

    idempotency_key: str
    exception_id: str
    action: str
    rule: str
    order_id: str | None
    reason: str
    requested_at: datetime
    amount: Decimal | None
    command: ActionCommand


# Shared tail of the claim scripts: count one attempt, cap, take a lease. Returns
# {verdict, attempts, command}.
_CLAIM = """
local function claim(h, now, lease, maxa)
  local attempts = redis.call('HINCRBY', h, 'attempts', 1)
  if attempts > maxa then
    redis.call('HSET', h, 'state', 'capped', 'attempts', maxa, 'decided_at', now)
    return {'capped', tostring(maxa), ''}
  end
  redis.call('HSET', h, 'state', 'sending', 'lease_until', now + lease)
  return {'send', tostring(attempts), redis.call('HGET', h, 'command')}
end
local function lease_live(h, now)
  return tonumber(redis.call('HGET', h, 'lease_until') or '0') > now
end
"""

# KEYS: hash, pending zset. ARGV: now, lease, max_attempts, decision, command, member, dry,
# kafka_key, blocklist_key, reason
_ON_CHANGE = (
    _CLAIM
    + """
local h = KEYS[1]
local now = tonumber(ARGV[1])
local state = redis.call('HGET', h, 'state')
if state == 'dry_run' and ARGV[7] == '0' then
  -- a dry run decided nothing: a live dispatcher decides afresh
  redis.call('DEL', h)
  state = false
end
if not state then
  redis.call('HSET', h, 'command', ARGV[5], 'kafka_key', ARGV[8], 'blocklist_key', ARGV[9],
             'reason', ARGV[10], 'requested_at', now, 'attempts', 0)
  if ARGV[4] == 'approval' then
    redis.call('HSET', h, 'state', 'pending_approval')
    redis.call('ZADD', KEYS[2], now, ARGV[6])
    return {'pending_approval', '0', ''}
  end
elseif state ~= 'sending' then
  return {'duplicate', redis.call('HGET', h, 'attempts') or '0', state}
elseif lease_live(h, now) then
  return {'busy', redis.call('HGET', h, 'attempts') or '0', state}
end
return claim(h, now, tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)

# KEYS: hash, pending zset. ARGV: now, lease, max_attempts, who, approved command, member
_APPROVE = (
    _CLAIM
    + """
local h = KEYS[1]
local now = tonumber(ARGV[1])
local state = redis.call('HGET', h, 'state')
if not state then
  return {'missing', '0', ''}
end
if state == 'pending_approval' then
  redis.call('HSET', h, 'command', ARGV[5], 'approved_by', ARGV[4], 'decided_by', ARGV[4], 'decided_at', now)
  redis.call('ZREM', KEYS[2], ARGV[6])
elseif state == 'sending' and redis.call('HEXISTS', h, 'approved_by') == 1 and not lease_live(h, now) then
  -- approved before, but its send failed or crashed: this approval retries it
else
  return {'duplicate', redis.call('HGET', h, 'attempts') or '0', state}
end
return claim(h, now, tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)

# KEYS: hash, pending zset. ARGV: now, who, note, member, new state (rejected | withdrawn)
_CLOSE = """
local h = KEYS[1]
local state = redis.call('HGET', h, 'state')
if not state then
  return 'missing'
end
if state ~= 'pending_approval' then
  return state
end
redis.call('HSET', h, 'state', ARGV[5], 'decided_by', ARGV[2], 'decided_at', ARGV[1], 'note', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
return 'closed'
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class ActionDispatcher:
    """A CaseListener: on `opened`, sends (or queues for approval) the actions the policy allows;
    on `resolved`, withdraws what still waits for approval. Idempotent per idempotency key."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        sink: ActionSink,
        policy: ActionPolicy,
        metrics: HandlerMetrics | None = None,
        *,
        lease_seconds: float = 30.0,
        retry_backoff_seconds: float = 1.0,
        retention_seconds: int = 30 * 86400,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.sink = sink
        self.policy = policy
        self.metrics = metrics if metrics is not None else NO_METRICS
        self.lease_ms = int(lease_seconds * 1000)
        self.retry_backoff = retry_backoff_seconds
        """Wait before the second attempt to send a command; doubles for each next one."""
        self.retention_seconds = retention_seconds
        self.clock = clock
        self.pending_key = f"{prefix}actions:pending"
        self._on_change = redis.register_script(_ON_CHANGE)
        self._approve = redis.register_script(_APPROVE)
        self._close = redis.register_script(_CLOSE)

    def action_key(self, exception_id: str, action: str) -> str:
        return f"{self.prefix}action:{idempotency_key(exception_id, action)}"

    def _count(self, action: str, outcome: str) -> None:
        self.metrics.action_outcome(action, outcome)

    async def __call__(self, change: CaseChange) -> None:
        try:
            if change.kind == "opened":
                await self._opened(change)
            elif change.kind == "resolved":
                await self._withdraw(change)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            msg = f"actions for {change.data.exception_id} not recorded: Redis unavailable ({type(exc).__name__})"
            raise StoreUnavailable(msg) from exc

    async def _opened(self, change: CaseChange) -> None:
        data = change.data
        codes = candidate_actions(data)
        async with self.redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hmget(self.action_key(data.exception_id, code), ["state", "attempts"])
            rows = await pipe.execute()
        # Only an unfinished send counts against the planner's cap; the script re-checks atomically.
        attempts = {
            code: int(_s(row[1]))
            for code, row in zip(codes, rows, strict=True)
            if row[0] is not None and _s(row[0]) == "sending" and row[1] is not None
        }
        for p in plan(change, self.policy, attempts):
            if p.decision == "skip":
                self._count(p.action, "skipped")
                log.debug("action %s for %s is off by policy", p.action, data.exception_id)
                continue
            await self._dispatch(data.exception_id, p)

    async def _dispatch(self, exception_id: str, p: Planned) -> None:
        """Record one planned action and send it if it runs now, using up its attempts here: the
        change that asked for it may never be delivered again."""
        for retry in itertools.count():
            verdict, tries, extra = (
                _s(v)
                for v in await self._on_change(
                    keys=[self.action_key(exception_id, p.action), self.pending_key],
                    args=[
                        _ms(self.clock()),
                        self.lease_ms,
                        self.policy.rule(p.action).max_attempts,
                        "approval" if p.decision == "approval" else "auto",
                        p.command.model_dump_json(),
                        p.command.id,
                        "1" if self.sink.dry_run else "0",
                        p.key,
                        p.blocklist_key or "",
                        p.reason,
                    ],
                )
            )
            if verdict == "pending_approval":
                self._count(p.action, "pending_approval")
                log.info("action %s for %s waits for approval (%s)", p.action, exception_id, p.reason)
            elif verdict == "capped":
                self._capped(p.action, exception_id, int(tries))
            elif verdict == "send":
                try:
                    await self._send(p.command.id, extra, p.key, p.blocklist_key)
                except DeliveryError as exc:
                    log.warning("action %s for %s: attempt %s failed (%s)", p.action, exception_id, tries, exc)
                    await asyncio.sleep(self.retry_backoff * 2**retry)
                    continue
            else:  # duplicate or busy: another delivery of this change did (or is doing) it
                log.debug("action %s for %s already %s", p.action, exception_id, extra)
            return

    def _capped(self, action: str, exception_id: str, attempts: int) -> None:
        self._count(action, "capped")
        log.error("action %s for %s gave up after %s attempts", action, exception_id, attempts)

    async def _send(self, ikey: str, raw: str, key: str, blocklist_key: str | None) -> ActionCommand:
        command = ActionCommand.model_validate_json(raw)
        now = self.clock()
        command = command.model_copy(update={"time": now})
        hkey = f"{self.prefix}action:{ikey}"
        try:
            if blocklist_key:
                entry = {"reason": f"{command.data.rule} {command.data.exception_id}", "added_at": now.isoformat()}
                await self.sink.send_blocklist(blocklist_key, entry, command)
            else:
                await self.sink.send_command(command, key)
        except DeliveryError:
            # Release the lease so the next delivery of this change (or approval) retries at once.
            await self.redis.hset(hkey, "lease_until", 0)
            self._count(command.data.action, "failed")
            raise
        outcome = "dry_run" if self.sink.dry_run else "sent"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(hkey, mapping={"state": outcome, "sent_at": _ms(now), "lease_until": 0})
            pipe.expire(hkey, self.retention_seconds)
            await pipe.execute()
        self._count(command.data.action, outcome)
        log.info("action %s for %s %s (%s)", command.data.action, command.data.exception_id, outcome, command.data.mode)
        return command

    async def _withdraw(self, change: CaseChange) -> None:
        data = change.data
        for code in candidate_actions(data):
            ikey = idempotency_key(data.exception_id, code)
            result = _s(
                await self._close(
                    keys=[self.action_key(data.exception_id, code), self.pending_key],
                    args=[_ms(change.at), change.who, "case resolved", ikey, "withdrawn"],
                )
            )
            if result == "closed":
                await self.redis.expire(self.action_key(data.exception_id, code), self.retention_seconds)
                self._count(code, "withdrawn")
                log.info("action %s for %s withdrawn: the case was resolved", code, data.exception_id)

    async def pending(self, limit: int = 50) -> list[PendingAction]:
        """Actions waiting for approval, oldest first."""
        try:
            members = cast(
                "list[tuple[Any, float]]",
                await self.redis.zrange(self.pending_key, 0, max(limit, 1) - 1, withscores=True),
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                for member, _ in members:
                    pipe.hgetall(f"{self.prefix}action:{_s(member)}")
                rows = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            msg = f"pending actions cannot be read: Redis unavailable ({type(exc).__name__})"
            raise StoreUnavailable(msg) from exc
        out = []
        for (member, score), row in zip(members, rows, strict=True):
            fields = {_s(k): _s(v) for k, v in row.items()}
            if fields.get("state") != "pending_approval":
                continue  # expired or decided between the two reads
            command = ActionCommand.model_validate_json(fields["command"])
            out.append(
                PendingAction(
                    idempotency_key=_s(member),
                    exception_id=command.data.exception_id,
                    action=command.data.action,
                    rule=command.data.rule,
                    order_id=command.data.order_id,
                    reason=fields.get("reason", ""),
                    requested_at=datetime.fromtimestamp(float(score) / 1000, UTC),
                    amount=command.data.params.amount,
                    command=command,
                )
            )
        return out

    async def approve(self, exception_id: str, action: str, who: str) -> ActionCommand:
        """Approve a pending action and send its command, once: approving again returns the sent
        command without sending it again. CaseNotFound if nothing is recorded for it,
        TransitionError if it was rejected, withdrawn or capped."""
        hkey = self.action_key(exception_id, action)
        ikey = idempotency_key(exception_id, action)
        try:
            raw = await self.redis.hget(hkey, "command")
            if raw is None:
                msg = f"no action {action} recorded for exception {exception_id}"
                raise CaseNotFound(msg)
            stored = ActionCommand.model_validate_json(_s(raw))
            approved = stored.model_copy(
                update={"data": stored.data.model_copy(update={"mode": "approved", "approved_by": who})}
            )
            verdict, tries, extra = await self._approve(
                keys=[hkey, self.pending_key],
                args=[
                    _ms(self.clock()),
                    self.lease_ms,
                    self.policy.rule(action).max_attempts,
                    who,
                    approved.model_dump_json(),
                    ikey,
                ],
            )
            verdict, extra = _s(verdict), _s(extra)
            if verdict == "missing":
                msg = f"no action {action} recorded for exception {exception_id}"
                raise CaseNotFound(msg)
            if verdict == "capped":
                self._capped(action, exception_id, int(_s(tries)))
                msg = f"action {action} for {exception_id} gave up after {_s(tries)} attempts"
                raise TransitionError(msg)
            if verdict == "duplicate":
                if extra in ("sent", "dry_run"):
                    return ActionCommand.model_validate_json(_s(await self.redis.hget(hkey, "command")))
                msg = f"action {action} for {exception_id} is {extra}; only a pending action can be approved"
                raise TransitionError(msg)
            fields = await self.redis.hmget(hkey, ["kafka_key", "blocklist_key"])
            log.info("action %s for %s approved", action, exception_id)
            return await self._send(ikey, extra, _s(fields[0]), _s(fields[1] or b"") or None)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            msg = f"approval of {action} for {exception_id} not recorded: Redis unavailable ({type(exc).__name__})"
            raise StoreUnavailable(msg) from exc

    async def reject(self, exception_id: str, action: str, who: str, note: str | None = None) -> None:
        """Reject a pending action: it is never sent. Rejecting twice is harmless."""
        hkey = self.action_key(exception_id, action)
        try:
            result = _s(
                await self._close(
                    keys=[hkey, self.pending_key],
                    args=[_ms(self.clock()), who, note or "", idempotency_key(exception_id, action), "rejected"],
                )
            )
            if result == "closed":
                await self.redis.expire(hkey, self.retention_seconds)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            msg = f"rejection of {action} for {exception_id} not recorded: Redis unavailable ({type(exc).__name__})"
            raise StoreUnavailable(msg) from exc
        if result == "missing":
            msg = f"no action {action} recorded for exception {exception_id}"
            raise CaseNotFound(msg)
        if result == "closed":
            self._count(action, "rejected")
            log.info("action %s for %s rejected", action, exception_id)
        elif result != "rejected":
            msg = f"action {action} for {exception_id} is {result}; only a pending action can be rejected"
            raise TransitionError(msg)
