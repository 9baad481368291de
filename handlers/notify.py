"""Notifications: case changes become webhook POSTs (plain JSON or a Slack-compatible body) on the
`[[webhooks]]` channels of the handlers TOML file, with retries, a circuit breaker and rate limits.

What cannot be delivered goes to a dead-letter list in Redis, never silently away. Redis keys
(under the handlers' prefix):
- `notify:sent:<channel>:<exception_id>:<kind>:<level>` (and `...:<channel>:incident:<incident_id>`):
  string, the message's state: `sending` (a lease while one worker delivers it), `sent`,
  `dead_lettered` or `dry_run`; kept `dedupe_ttl_seconds` so a replay never notifies twice.
- `notify:rate:<channel>`: sorted set, the sends of the last minute (a sliding window every worker shares).
- `notify:dlq`: list of JSON entries `{channel, reason, kind, exception_id, dedupe, attempts,
  failed_at, body}`; the body is the masked one that was (or would have been) sent.
- `notify:dlq:requeue`: list, entries `requeue_dead_letters()` is working on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orderwatch.errors import ConfigError, StoreUnavailable
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.metrics import NO_METRICS, HandlerMetrics
from orderwatch.handlers.policy import config_error, read_handlers_config
from orderwatch.handlers.privacy import mask_evidence, mask_summary
from orderwatch.schemas.exception_event import CATEGORIES, SEVERITIES, Category, Severity

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "Channel",
    "CircuitBreaker",
    "Message",
    "Notifier",
    "load_channels",
    "pages",
    "parse_channels",
    "render",
    "route",
]

log = logging.getLogger(__name__)

MessageKind = Literal["opened", "escalated", "resolved", "incident"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Channel(BaseModel):
    """One `[[webhooks]]` table: where to POST, what to send there, and how hard to try."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    EXPECTED: ClassVar[dict[str, str]] = {
        "name": "a unique name of letters, digits, '_', '-' or '.' (at most 64)",
        "url": "an http:// or https:// URL",
        "format": "one of json, slack",
        "severities": f"a list of {', '.join(SEVERITIES)}",
        "categories": f"a list of {', '.join(CATEGORIES)}",
        "kinds": "a list of opened, escalated, resolved, incident",
        "rate_limit_per_minute": "an integer >= 1",
        "timeout_seconds": "a number of seconds > 0 and <= 60",
        "max_attempts": "an integer from 1 to 10",
        "backoff_ms": "an integer >= 0 (milliseconds)",
        "backoff_max_ms": "an integer >= 0 (milliseconds)",
        "breaker_failures": "an integer >= 1",
        "breaker_cooldown_ms": "an integer >= 0 (milliseconds)",
        "headers": "a table of header names to strings",
    }

    name: str
    """Names the channel in metrics, logs and Redis keys."""
    url: str
    format: Literal["json", "slack"] = "json"
    """json: the notification as a JSON object; slack: `{"text": ..., "blocks": [...]}`."""
    severities: tuple[Severity, ...] = SEVERITIES  # type: ignore[assignment]
    categories: tuple[Category, ...] = CATEGORIES  # type: ignore[assignment]
    kinds: tuple[MessageKind, ...] = ("opened", "escalated", "incident")
    """Which moves to send; `incident` is the one page sent when an incident reaches its threshold."""
    rate_limit_per_minute: StrictInt = Field(60, ge=1)
    """Messages in any 60 s, across all workers; the next ones are dead-lettered as rate_limited."""
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_attempts: StrictInt = Field(4, ge=1, le=10)
    """HTTP requests per message before it is dead-lettered."""
    backoff_ms: StrictInt = Field(500, ge=0)
    """First retry waits about this long; each next one twice as long (with jitter)."""
    backoff_max_ms: StrictInt = Field(30_000, ge=0)
    breaker_failures: StrictInt = Field(5, ge=1)
    """Consecutive failed requests that open the channel's circuit breaker."""
    breaker_cooldown_ms: StrictInt = Field(60_000, ge=0)
    """How long an open breaker refuses everything before it lets one probe through."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (e.g. an authorization token); never logged."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            msg = "bad name"
            raise ValueError(msg)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = "bad url"
            raise ValueError(msg)
        return value

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = "not a number"
            raise ValueError(msg)
        return value


def parse_channels(doc: Mapping[str, Any]) -> list[Channel]:
    """The `[[webhooks]]` channels of a parsed handlers config (none by default)."""
    tables = doc.get("webhooks", [])
    if not isinstance(tables, list):
        msg = f"handlers config webhooks: expected [[webhooks]] tables, got {tables!r}"
        raise ConfigError(msg)
    channels: list[Channel] = []
    for n, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            msg = f"handlers config [[webhooks]] #{n}: expected a table, got {table!r}"
            raise ConfigError(msg)
        name = table.get("name")
        section = f"[[webhooks]] {name!r}" if isinstance(name, str) else f"[[webhooks]] #{n}"
        try:
            channel = Channel.model_validate(table)
        except ValidationError as exc:
            raise config_error(section, exc, Channel.EXPECTED) from exc
        if any(c.name == channel.name for c in channels):
            msg = f"handlers config {section} name: expected a unique name, got {channel.name!r} twice"
            raise ConfigError(msg)
        if channel.backoff_max_ms < channel.backoff_ms:
            msg = (
                f"handlers config {section} backoff_max_ms: expected a number >= backoff_ms "
                f"({channel.backoff_ms}), got {channel.backoff_max_ms}"
            )
            raise ConfigError(msg)
        channels.append(channel)
    return channels


def load_channels(path: str | Path | None) -> list[Channel]:
    """The webhook channels of the handlers config file at `path` (none for None)."""
    return parse_channels(read_handlers_config(path))


# -- routing and bodies (pure) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One notification for one channel."""

    channel: Channel
    kind: MessageKind
    dedupe: str
    """`<exception_id>:<kind>:<level>`, or `incident:<incident_id>`: unique per channel."""
    exception_id: str
    body: dict[str, Any]
    """What is POSTed, already masked and in the channel's format."""


def _wants(channel: Channel, change: CaseChange, kind: MessageKind) -> bool:
    data = change.data
    return kind in channel.kinds and data.severity in channel.severities and data.category in channel.categories


def _case_body(change: CaseChange) -> dict[str, Any]:
    data = change.data
    return {
        "kind": change.kind,
        "level": change.level,
        "exception_id": data.exception_id,
        "rule": data.rule,
        "category": data.category,
        "severity": data.severity,
        "status": change.status,
        "subject": data.subject,
        "order_id": data.order_id,
        "summary": mask_summary(data.summary, data.evidence),
        "handle_by": data.handle_by.isoformat(),
        "detected_at": data.detected_at.isoformat(),
        "at": change.at.isoformat(),
        "recommended_action": data.recommended_action,
        "incident_id": change.incident_id,
        "evidence": mask_evidence(data.evidence),
    }


_CAUSE_KEYS = ("carrier", "provider", "warehouse_id", "sku")


def _incident_body(change: CaseChange) -> dict[str, Any]:
    data = change.data
    cause = {k: data.evidence[k] for k in _CAUSE_KEYS if isinstance(data.evidence.get(k), str | int)}
    described = ", ".join(f"{k} {v}" for k, v in cause.items()) or "one cause"
    return {
        "kind": "incident",
        "level": change.level,
        "incident_id": change.incident_id,
        "count": change.incident_count,
        "exception_id": data.exception_id,
        "rule": data.rule,
        "category": data.category,
        "severity": data.severity,
        "summary": f"{change.incident_count} {data.rule} exceptions share {described}.",
        "cause": mask_evidence(cause),
        "handle_by": data.handle_by.isoformat(),
        "at": change.at.isoformat(),
        "recommended_action": data.recommended_action,
    }


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(body: dict[str, Any]) -> dict[str, Any]:
    kind = body["kind"]
    title = f"{body['rule']} {kind}" + (f" (level {body['level']})" if kind == "escalated" else "")
    if kind == "incident":
        title = f"Incident: {body['count']} x {body['rule']}"
    text = f"[{body['severity'].upper()}] {title}: {body['summary']}"
    facts = [
        ("Severity", body["severity"]),
        ("Handle by", body["handle_by"]),
        ("Exception", f"`{body['exception_id']}`"),
        ("Action", body["recommended_action"]),
    ]
    if body.get("order_id"):
        facts.append(("Order", f"`{body['order_id']}`"))
    if body.get("incident_id"):
        facts.append(("Incident", f"`{body['incident_id']}`"))
    detail = body.get("evidence") if kind != "incident" else body.get("cause")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _esc(body["summary"])[:3000]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_esc(str(v))}"[:2000]} for k, v in facts[:10]],
        },
    ]
    if detail:
        dump = json.dumps(detail, indent=1, sort_keys=True, default=str)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{_esc(dump)[:2900]}```"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"orderwatch · {kind} · {body['at']}"}]})
    return {"text": _esc(text)[:3000], "blocks": blocks}


def render(channel: Channel, body: dict[str, Any]) -> dict[str, Any]:
    """The body in the channel's format."""
    return _slack(body) if channel.format == "slack" else body


def pages(change: CaseChange) -> bool:
    """Is the incident page due with this change? Yes for the change whose case made its incident
    reach the threshold (`paging`, set by the handler service), and for any suppressed change (in
    case that one was missed); the per-channel dedupe keeps it to one."""
    if change.incident_id is None:
        return False
    return change.paging or change.suppressed


def route(change: CaseChange, channels: Sequence[Channel]) -> tuple[list[Message], list[Channel]]:
    """(messages to send, channels that would have had the case but its incident covers it).

    A case message goes out for opened/escalated/resolved, unless the change is `suppressed`, or
    pages its incident on a channel that takes `incident` (the page replaces the case there).
    """
    data = change.data
    messages: list[Message] = []
    covered: list[Channel] = []
    paging = pages(change)
    for channel in channels:
        incident = paging and _wants(channel, change, "incident")
        if incident:
            body = render(channel, _incident_body(change))
            messages.append(Message(channel, "incident", f"incident:{change.incident_id}", data.exception_id, body))
        if change.kind not in ("opened", "escalated", "resolved"):
            continue
        kind: MessageKind = change.kind
        if not _wants(channel, change, kind):
            continue
        if change.suppressed or incident:
            covered.append(channel)
            continue
        body = render(channel, _case_body(change))
        messages.append(Message(channel, kind, f"{data.exception_id}:{kind}:{change.level}", data.exception_id, body))
    return messages, covered


# -- circuit breaker ---------------------------------------------------------------------------


class CircuitBreaker:
    """closed -> open after `failures` consecutive failed requests -> half-open after `cooldown`
    seconds, when exactly one probe goes through: its success closes, its failure reopens.
    Per worker: each worker judges the endpoint by what it sees itself."""

    __slots__ = ("_on_change", "clock", "consecutive", "cooldown", "failures", "opened_at", "probing", "state")

    def __init__(
        self,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.state: Literal["closed", "open", "half_open"] = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False
        self._on_change = on_change

    def _set(self, state: Literal["closed", "open", "half_open"]) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def allow(self) -> bool:
        """May a request go now? In half-open, True once, for the probe."""
        if self.state == "open":
            if self.clock() - self.opened_at < self.cooldown:
                return False
            self._set("half_open")
        if self.state == "half_open":
            if self.probing:
                return False
            self.probing = True
        return True

    def success(self) -> None:
        self.consecutive = 0
        self.probing = False
        self._set("closed")

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or self.consecutive >= self.failures:
            self.opened_at = self.clock()
            self.probing = False
            self._set("open")

    def abandon(self) -> None:
        """The request ended with neither outcome (cancelled): let another probe go."""
        self.probing = False


# -- delivery ----------------------------------------------------------------------------------

_RATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# A message is claimed once; what a dry run only logged, a live notifier sends.
_CLAIM = """
local state = redis.call('GET', KEYS[1])
if state and not (state == 'dry_run' and ARGV[2] == '0') then
  return 0
end
redis.call('SET', KEYS[1], 'sending', 'PX', ARGV[1])
return 1
"""
_BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
_RETRYABLE = frozenset({408, 425, 429})


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Notifier:
    """A CaseListener that sends each change to the channels that want it, once per
    (channel, exception_id, kind, level), and dead-letters what it cannot deliver."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        channels: Sequence[Channel],
        session: aiohttp.ClientSession,
        metrics: HandlerMetrics | None = None,
        dry_run: bool = False,
        *,
        dedupe_ttl_seconds: int = 30 * 86400,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.channels = {c.name: c for c in channels}
        self.session = session
        self.metrics = metrics if metrics is not None else NO_METRICS
        self.dry_run = dry_run
        self.dedupe_ttl = dedupe_ttl_seconds
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.rng = rng
        self.dlq_key = f"{prefix}notify:dlq"
        self._requeue_key = f"{prefix}notify:dlq:requeue"
        self._rate = redis.register_script(_RATE)
        self._claim = redis.register_script(_CLAIM)
        self.breakers = {
            c.name: CircuitBreaker(
                c.breaker_failures, c.breaker_cooldown_ms / 1000, monotonic, self._gauge_setter(c.name)
            )
            for c in channels
        }
        for c in channels:
            self._gauge_setter(c.name)("closed")

    def _gauge_setter(self, name: str) -> Callable[[str], None]:
        def set_state(state: str) -> None:
            self.metrics.breaker_changed(name, _BREAKER_LEVEL[state])
            if state != "closed":
                log.warning("webhook %s: circuit breaker %s", name, state)

        return set_state

    def _count(self, channel: str, outcome: str, n: int = 1) -> None:
        self.metrics.notified(channel, outcome, n)

    def _lease_ms(self, c: Channel) -> int:
        # Longer than the slowest possible delivery, so two workers never send one message together.
        return int(c.max_attempts * (c.timeout_seconds * 1000 + c.backoff_max_ms)) + 5000

    async def __call__(self, change: CaseChange) -> None:
        messages, suppressed = route(change, list(self.channels.values()))
        for channel in suppressed:
            self._count(channel.name, "suppressed")
        if not messages:
            return
        results = await asyncio.gather(*(self._notify(m) for m in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, RedisConnectionError | RedisTimeoutError):
                    why = type(result).__name__
                    msg = f"notifications for {change.data.exception_id} not recorded: Redis unavailable ({why})"
                    raise StoreUnavailable(msg) from result
                raise result

    def _state_key(self, m: Message) -> str:
        return f"{self.prefix}notify:sent:{m.channel.name}:{m.dedupe}"

    async def _notify(self, m: Message) -> None:
        key = self._state_key(m)
        claimed = await self._claim(keys=[key], args=[self._lease_ms(m.channel), "1" if self.dry_run else "0"])
        if not int(claimed):
            log.debug("webhook %s: %s of %s already handled", m.channel.name, m.kind, m.exception_id)
            return
        if self.dry_run:
            log.info(
                "dry run: would notify %s of %s (%s, %s)",
                m.channel.name,
                m.kind,
                m.exception_id,
                m.body.get("rule", "-"),
            )
            await self.redis.set(key, "dry_run", ex=self.dedupe_ttl)
            self._count(m.channel.name, "dry_run")
            return
        await self._deliver(m.channel, m.kind, m.dedupe, m.exception_id, m.body, key, requeues=0)

    async def _deliver(
        self, c: Channel, kind: str, dedupe: str, exception_id: str, body: dict[str, Any], key: str, requeues: int
    ) -> str:
        """Rate limit, breaker, POST with retries; the message ends `sent` or dead-lettered."""
        now_ms = int(self.wall_clock() * 1000)
        allowed = await self._rate(
            keys=[f"{self.prefix}notify:rate:{c.name}"],
            args=[now_ms, 60_000, c.rate_limit_per_minute, f"{now_ms}-{uuid.uuid4().hex[:12]}"],
        )
        if not int(allowed):
            self._count(c.name, "rate_limited")
            reason, attempts = "rate_limited", 0
        else:
            reason, attempts = await self._post(c, body)
        if reason == "sent":
            await self.redis.set(key, "sent", ex=self.dedupe_ttl)
            self._count(c.name, "sent")
            log.info("webhook %s: %s of %s sent (%s attempts)", c.name, kind, exception_id, attempts)
            return "sent"
        entry = {
            "channel": c.name,
            "reason": reason,
            "kind": kind,
            "exception_id": exception_id,
            "dedupe": dedupe,
            "attempts": attempts,
            "requeues": requeues,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall_clock())),
            "body": body,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.dlq_key, json.dumps(entry, default=str))
            pipe.set(key, "dead_lettered", ex=self.dedupe_ttl)
            await pipe.execute()
        self._count(c.name, "dead_lettered")
        log.error(
            "webhook %s: %s of %s dead-lettered (%s after %s attempts)", c.name, kind, exception_id, reason, attempts
        )
        return reason

    def _backoff(self, c: Channel, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): exponential, with equal jitter so
        workers that failed together do not retry together."""
        cap = min(c.backoff_max_ms, c.backoff_ms * (1 << (attempt - 1))) / 1000
        return cap / 2 + self.rng() * cap / 2

    async def _post(self, c: Channel, body: dict[str, Any]) -> tuple[str, int]:
        """('sent' or the last failure reason, requests made)."""
        breaker = self.breakers[c.name]
        payload = json.dumps(body, default=str).encode()
        headers = {"Content-Type": "application/json", **c.headers}
        timeout = aiohttp.ClientTimeout(total=c.timeout_seconds)
        reason, made = "breaker_open", 0
        for attempt in range(1, c.max_attempts + 1):
            if not breaker.allow():
                self._count(c.name, "breaker_open")
                return "breaker_open", made
            made += 1
            retryable = True
            try:
                async with self.session.post(c.url, data=payload, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    status = resp.status
            except TimeoutError:
                reason = "timeout"
            except aiohttp.ClientError as exc:
                reason = f"connection:{type(exc).__name__}"
            except BaseException:
                breaker.abandon()
                raise
            else:
                if 200 <= status < 300:
                    breaker.success()
                    return "sent", made
                reason = f"http_{status}"
                retryable = status >= 500 or status in _RETRYABLE
            breaker.failure()
            self._count(c.name, "failed")
            log.warning("webhook %s: attempt %s of %s failed (%s)", c.name, attempt, c.max_attempts, reason)
            if not retryable:
                break
            if attempt < c.max_attempts:
                await self.sleep(self._backoff(c, attempt))
        return reason, made

    async def requeue_dead_letters(self, limit: int = 100) -> dict[str, int]:
        """Try the dead letters again, oldest first, at most `limit` (what fails again goes back to
        the end of the list). Returns the outcomes counted. One caller at a time."""
        counts: Counter[str] = Counter()
        try:
            # What a crashed earlier run was holding goes back first.
            while await self.redis.lmove(self._requeue_key, self.dlq_key, "RIGHT", "LEFT") is not None:
                pass
            todo = min(limit, int(await self.redis.llen(self.dlq_key)))
            for _ in range(todo):
                raw = await self.redis.lmove(self.dlq_key, self._requeue_key, "LEFT", "RIGHT")
                if raw is None:
                    break
                entry = json.loads(_s(raw))
                channel = self.channels.get(entry.get("channel", ""))
                if channel is None:
                    # The channel left the config: keep the entry for a person to look at.
                    await self.redis.rpush(self.dlq_key, _s(raw))
                    counts["unknown_channel"] += 1
                else:
                    key = f"{self.prefix}notify:sent:{channel.name}:{entry['dedupe']}"
                    outcome = await self._deliver(
                        channel,
                        entry["kind"],
                        entry["dedupe"],
                        entry["exception_id"],
                        entry["body"],
                        key,
                        requeues=int(entry.get("requeues", 0)) + 1,
                    )
                    counts["sent" if outcome == "sent" else "dead_lettered"] += 1
                await self.redis.lrem(self._requeue_key, 1, _s(raw))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            msg = f"dead letters not requeued: Redis unavailable ({type(exc).__name__})"
            raise StoreUnavailable(msg) from exc
        return dict(counts)

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest dead letters (masked bodies), for people to look at."""
        try:
            raws = await self.redis.lrange(self.dlq_key, 0, max(limit, 1) - 1)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            msg = f"dead letters cannot be read: Redis unavailable ({type(exc).__name__})"
            raise StoreUnavailable(msg) from exc
        return [json.loads(_s(r)) for r in raws]
