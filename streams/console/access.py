"""Who may do what: role tokens (from settings and a tokens file re-read when it changes), the
console's sessions and the failed-login limiter (both in Redis, shared by every worker).

Roles: `viewer` reads; `operator` reads, acknowledges, resolves and assigns; `approver` reads,
approves and rejects actions. A token names a person (or a role), and that name is what the case
history records as "who": it comes from the server's configuration, never from the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis

from orderwatch.errors import ConfigError
from orderwatch.handlers.store import redis_call
from orderwatch.streams.settings import Settings

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "LoginLimiter",
    "Permission",
    "Principal",
    "SessionStore",
    "TokenRegistry",
    "bearer_token",
    "fingerprint",
]

log = logging.getLogger("orderwatch.access")

T = TypeVar("T")

Permission = Literal["read", "work", "approve"]
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "work"}),
    "approver": frozenset({"read", "approve"}),
}
PERMISSIONS: dict[str, str] = {
    "read": "viewer, operator or approver",
    "work": "operator",
    "approve": "approver",
}
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_TOKEN = 512
"""Longer presented tokens are refused before hashing (nobody's token is that long)."""


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an `Authorization: Bearer <token>` header ("" when there is none)."""
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def fingerprint(token: str) -> str:
    """sha256 of a token, hex: what the registry and the sessions keep instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a name for the audit trail, roles, and the token's fingerprint (a
    session stays valid only while that token does)."""

    name: str
    roles: frozenset[str]
    fingerprint: str

    def can(self, permission: str) -> bool:
        return any(permission in ROLES[r] for r in self.roles)


def _parse_entries(doc: Mapping[str, Any], where: str) -> list[Principal]:
    entries = doc.get("tokens", [])
    unknown = [k for k in doc if k != "tokens"]
    if unknown or not isinstance(entries, list):
        msg = f"{where}: expected only [[tokens]] tables (name, roles, token or sha256)"
        raise ConfigError(msg)
    out = []
    for i, entry in enumerate(entries):
        at = f"{where} [[tokens]] #{i + 1}"
        if not isinstance(entry, dict) or set(entry) - {"name", "roles", "token", "sha256"}:
            msg = f"{at}: expected the keys name, roles and token (or sha256)"
            raise ConfigError(msg)
        name, roles = entry.get("name"), entry.get("roles")
        if not isinstance(name, str) or not _NAME.match(name):
            msg = f"{at} name: expected 1 to 64 of A-Z a-z 0-9 _ . @ -"
            raise ConfigError(msg)
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            msg = f"{at} roles: expected a non-empty list of {', '.join(ROLES)}"
            raise ConfigError(msg)
        token, digest = entry.get("token"), entry.get("sha256")
        if isinstance(token, str) and 16 <= len(token) <= MAX_TOKEN and digest is None:
            digest = fingerprint(token)
        elif not (token is None and isinstance(digest, str) and _HEX.match(digest)):
            msg = f"{at}: expected token (16 to {MAX_TOKEN} characters) or sha256 (64 hex digits), not both"
            raise ConfigError(msg)
        out.append(Principal(name, frozenset(roles), digest))
    return out


class TokenRegistry:
    """The valid tokens: the role tokens of the settings plus the tokens file, which is re-read
    whenever its modification time or size changes, so tokens rotate without a restart. A file
    that turns invalid keeps the last good set (and says so in the log); at start-up it is an error."""

    def __init__(self, settings: Settings) -> None:
        self._fixed: list[Principal] = []
        for name, secret, roles in (
            ("api", settings.api_token, tuple(ROLES)),
            ("viewer", settings.viewer_token, ("viewer",)),
            ("operator", settings.operator_token, ("operator",)),
            ("approver", settings.approver_token, ("approver",)),
        ):
            if secret is not None and secret.get_secret_value():
                self._fixed.append(Principal(name, frozenset(roles), fingerprint(secret.get_secret_value())))
        self.path = settings.tokens_file
        self._stamp: tuple[int, int] | None = None
        self._file: list[Principal] = []
        if self.path is not None:
            self._reload(strict=True)

    def _reload(self, *, strict: bool) -> None:
        path = self.path
        if path is None:
            return
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
            entries = _parse_entries(doc, f"tokens file {path}")
        except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
            if strict:
                msg = f"tokens file {self.path}: {exc}" if not isinstance(exc, ConfigError) else str(exc)
                raise ConfigError(msg) from exc
            if self._stamp is not None:
                log.error("tokens file %s unreadable or invalid, keeping the previous tokens: %s", self.path, exc)
                self._stamp = None  # warn once per bad version; read again on the next change
            return
        self._file, self._stamp = entries, stamp
        log.info("tokens file %s loaded: %d tokens", self.path, len(entries))

    def principals(self) -> list[Principal]:
        if self.path is not None:
            self._reload(strict=False)
        return [*self._fixed, *self._file]

    @property
    def configured(self) -> bool:
        return bool(self.principals())

    def lookup(self, token: str) -> Principal | None:
        """The principal of a presented token, or None. Compared by fingerprint in constant time."""
        if not token or len(token) > MAX_TOKEN:
            return None
        given = fingerprint(token).encode()
        found = None
        for p in self.principals():
            if hmac.compare_digest(given, p.fingerprint.encode()) and found is None:
                found = p
        return found

    def by_fingerprint(self, digest: str) -> Principal | None:
        """The principal whose token has this fingerprint, if that token is still valid."""
        return next((p for p in self.principals() if hmac.compare_digest(digest, p.fingerprint)), None)


async def _call(doing: str, awaitable: Awaitable[T]) -> T:
    return await redis_call("session store", doing, awaitable)


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str


class SessionStore:
    """Console sessions in Redis (`<prefix>session:<sha256 of the id>`), so any worker behind a
    load balancer knows them; the cookie holds a random id, Redis never the id itself."""

    def __init__(self, redis: aioredis.Redis, prefix: str, registry: TokenRegistry, minutes: float) -> None:
        self.redis, self.prefix, self.registry = redis, prefix, registry
        self.seconds = max(1, int(minutes * 60))

    def _key(self, sid: str) -> str:
        return f"{self.prefix}session:{fingerprint(sid)}"

    async def create(self, principal: Principal) -> tuple[str, str]:
        """A new session: (the cookie's id, its CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        key = self._key(sid)

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"token": principal.fingerprint, "csrf": csrf})
                pipe.expire(key, self.seconds)
                await pipe.execute()

        await _call("opening a session", write())
        return sid, csrf

    async def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie id, or None (unknown, expired, or its token revoked)."""
        if not sid or len(sid) > 128:
            return None
        raw = await _call("reading a session", self.redis.hmget(self._key(sid), ["token", "csrf"]))
        digest, csrf = raw
        if digest is None or csrf is None:
            return None
        principal = self.registry.by_fingerprint(digest.decode() if isinstance(digest, bytes) else str(digest))
        if principal is None:
            return None
        return Session(principal, csrf.decode() if isinstance(csrf, bytes) else str(csrf))

    async def delete(self, sid: str | None) -> None:
        if sid and len(sid) <= 128:
            await _call("closing a session", self.redis.delete(self._key(sid)))


class LoginLimiter:
    """At most `attempts` failed logins (console or bearer) per client address per `window`
    seconds, counted in Redis so that every worker shares the count."""

    def __init__(self, redis: aioredis.Redis, prefix: str, attempts: int, window: float) -> None:
        self.redis, self.prefix = redis, prefix
        self.attempts, self.window = attempts, max(1, int(window))

    def _key(self, client: str) -> str:
        return f"{self.prefix}login:failed:{fingerprint(client)[:32]}"

    async def retry_after(self, client: str) -> int | None:
        """Seconds until this client may try again, or None when it may now."""
        key = self._key(client)
        count = await _call("reading the login limiter", self.redis.get(key))
        if count is None or int(count) < self.attempts:
            return None
        ttl = await _call("reading the login limiter", self.redis.ttl(key))
        return max(1, int(ttl))

    async def failed(self, client: str) -> None:
        key = self._key(client)

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window, nx=True)
                await pipe.execute()

        await _call("counting a failed login", write())


def roles_of(principals: Iterable[Principal]) -> dict[str, int]:
    """How many tokens hold each role (for the start-up log: counts, never tokens)."""
    out = dict.fromkeys(ROLES, 0)
    for p in principals:
        for r in p.roles:
            out[r] += 1
    return out
