"""Rule configuration: defaults from RULES.md, one TOML file, overrides per segment (merchant,
payment method, carrier, channel, country).

Lookups on the hot path go through `RulesConfig.profile(merchant, channel, ...)`, a cached dict.

    [rules.PAYMENT_TIMEOUT]            # defaults for everyone
    threshold = "45m"
    [rules.ADDRESS_CLUSTER]            # windowed rules take their own parameters
    window = "24h"
    min_orders = 5
    [channel.marketplace.rules.SHIPMENT_NOT_CREATED]
    threshold = "72h"
    [payment_method.bank_transfer.rules.PAYMENT_TIMEOUT]
    threshold = "4d"
    [merchant."m-42".rules.PAYMENT_TIMEOUT]   # see SEGMENTS for who beats whom
    enabled = false
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "GLOBAL_PARAMS", "SEGMENTS", "Profile", "ProfileKey", "RulesConfig", "parse_duration"]

H = 3600.0
D = 86400.0

# Deadline rules' thresholds in seconds. DELIVERY_OVERDUE has none: its deadline is the promise.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "PAYMENT_NOT_CONFIRMED": 5 * 60.0,
    "PAYMENT_TIMEOUT": 30 * 60.0,
    "PAYMENT_AMOUNT_MISMATCH": 10 * 60.0,
    "PAYMENT_WITHOUT_ORDER": 10 * 60.0,
    "STOCK_NOT_RESERVED": 15 * 60.0,
    "SHIPMENT_NOT_CREATED": 48 * H,
    "TRACKING_STALLED": 3 * D,
    "CANCEL_NOT_PROCESSED": 30 * 60.0,
    "REFUND_OVERDUE": 24 * H,
    "ORDER_STUCK": 7 * D,
    "DUPLICATE_ORDER": 10 * 60.0,
}

# Rules keyed by something other than the order: their parameters are global, not per merchant.
GLOBAL_PARAMS: dict[str, dict[str, float]] = {
    "ADDRESS_CLUSTER": {"window": 24 * H, "min_orders": 5, "min_customers": 3},
    "NEW_ACCOUNT_BURST": {"account_age": 7 * D, "window": 1 * H, "min_orders": 5},
    "PAYMENT_FAILURE_SPIKE": {"window": 5 * 60.0, "min_failures": 20, "min_rate": 0.30},
}
CHANNELS = ("web", "app", "marketplace", "pos")
# Override scopes, strongest first: for each rule the first scope that names the order's value and
# sets the rule decides. The merchant's own contract beats everything; the payment method and the
# carrier describe the very step a deadline times, so they beat the broad channel and country.
# `carrier` is known only from shipment.created on: it applies to episodes started after it.
SEGMENTS = ("merchant", "payment_method", "carrier", "channel", "country")
# The order of ProfileKey (and of `profile`'s arguments): the first two keep the old call shape.
KEY_ORDER = ("merchant", "channel", "payment_method", "country", "carrier")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SEGMENT_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_DURATION_PARAMS = {"threshold", "window", "account_age"}
_COUNT_PARAMS = {"min_orders", "min_customers", "min_failures"}

# A profile maps rule code -> threshold seconds, or None when the rule is disabled for it.
Profile = dict[str, float | None]
# (merchant, channel, payment_method, country, carrier), each None when no override names it.
ProfileKey = tuple[str | None, str | None, str | None, str | None, str | None]
Override = tuple[bool | None, float | None]

_UNITS = {"s": 1.0, "m": 60.0, "h": H, "d": D, "w": 7 * D}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: Any, key: str) -> float:
    """`"30m"`, `"48h"`, `"3d"`, or a number of seconds; anything else names `key`."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float) and value > 0:
        return float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)) and float(m.group(1)) > 0:
        return float(m.group(1)) * _UNITS[m.group(2)]
    msg = f'config key {key}: expected a positive duration like "30m", "48h", "3d" or seconds, got {value!r}'
    raise ConfigError(msg)


@dataclass(slots=True)
class RulesConfig:
    """Effective rule settings. Build with `RulesConfig()` for the defaults or `load(path)`."""

    enabled: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(RULES, True))
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    params: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in GLOBAL_PARAMS.items()})
    amount_tolerance: float = 0.01
    """Money sums closer than this count as equal (RULES.md: within 0.01)."""
    merchant_overrides: dict[str, dict[str, Override]] = field(default_factory=dict)
    channel_overrides: dict[str, dict[str, Override]] = field(default_factory=dict)
    payment_method_overrides: dict[str, dict[str, Override]] = field(default_factory=dict)
    carrier_overrides: dict[str, dict[str, Override]] = field(default_factory=dict)
    country_overrides: dict[str, dict[str, Override]] = field(default_factory=dict)
    _profiles: dict[ProfileKey, Profile] = field(default_factory=dict, repr=False)
    _profile_keys: dict[int, ProfileKey] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> RulesConfig:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            msg = f"config file {path}: cannot read it ({exc.strerror})"
            raise ConfigError(msg) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            msg = f"config file {path}: not valid TOML in UTF-8 ({exc})"
            raise ConfigError(msg) from exc
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RulesConfig:
        cfg = cls()
        for key in doc:
            if key not in ("rules", "amount_tolerance", *SEGMENTS):
                msg = f"config key {key}: unknown; expected one of rules, {', '.join(SEGMENTS)}, amount_tolerance"
                raise ConfigError(msg)
        if "amount_tolerance" in doc:
            tol = doc["amount_tolerance"]
            if isinstance(tol, bool) or not isinstance(tol, int | float) or tol < 0:
                msg = f"config key amount_tolerance: expected a number >= 0, got {tol!r}"
                raise ConfigError(msg)
            cfg.amount_tolerance = float(tol)
        for code, table in _table(doc, "rules").items():
            cfg._apply_default(code, _table({"t": table}, "t", f"rules.{code}"))
        for scope in SEGMENTS:
            target = cfg.overrides(scope)
            for name, section in _table(doc, scope).items():
                _segment_name(scope, name)
                section = _table({"s": section}, "s", f"{scope}.{name}")
                extra = set(section) - {"rules"}
                if extra:
                    msg = f"config key {scope}.{name}.{sorted(extra)[0]}: unknown; expected rules"
                    raise ConfigError(msg)
                rules = _table(section, "rules", f"{scope}.{name}.rules")
                target[name] = {
                    code: _override(
                        code, _table({"t": t}, "t", f"{scope}.{name}.rules.{code}"), f"{scope}.{name}.rules.{code}"
                    )
                    for code, t in rules.items()
                }
        return cfg

    def _apply_default(self, code: str, table: dict[str, Any]) -> None:
        prefix = f"rules.{code}"
        _known_rule(code, prefix)
        for key, value in table.items():
            path = f"{prefix}.{key}"
            if key == "enabled":
                self.enabled[code] = _bool(value, path)
            elif key == "threshold" and code in self.thresholds:
                self.thresholds[code] = parse_duration(value, path)
            elif code in self.params and key in self.params[code]:
                self.params[code][key] = _param(key, value, path)
            else:
                allowed = ["enabled"]
                if code in self.thresholds:
                    allowed.append("threshold")
                allowed += sorted(self.params.get(code, {}))
                msg = f"config key {path}: unknown; expected one of {', '.join(allowed)}"
                raise ConfigError(msg)

    def overrides(self, scope: str) -> dict[str, dict[str, Override]]:
        """The overrides of one segment scope (`merchant`, `payment_method`, ...): name -> rule -> override."""
        table: dict[str, dict[str, Override]] = getattr(self, f"{scope}_overrides")
        return table

    def profile(
        self,
        merchant: str | None = None,
        channel: str | None = None,
        payment_method: str | None = None,
        country: str | None = None,
        carrier: str | None = None,
    ) -> Profile:
        """Thresholds for an order of these segments (None = disabled). A value no override
        names counts as None, so the cache holds one profile per configured combination, not
        one per merchant id or carrier string an upstream ever sends."""
        key = self._key(merchant, channel, payment_method, country.upper() if country else None, carrier)
        prof = self._profiles.get(key)
        if prof is None:
            prof = {c: (self.thresholds.get(c, 0.0) if self.enabled[c] else None) for c in RULES}
            values = dict(zip(KEY_ORDER, key, strict=True))
            # Weakest first, so a stronger scope's setting is applied last and wins.
            layers = [self.overrides(scope).get(values[scope] or "") for scope in reversed(SEGMENTS)]
            for layer in layers:
                for code, (enabled, threshold) in (layer or {}).items():
                    if enabled is False:
                        prof[code] = None
                    elif threshold is not None:
                        prof[code] = threshold
                    elif enabled and prof[code] is None:
                        # Re-enabled without a threshold: the default, not a lower layer's value.
                        prof[code] = self.thresholds.get(code, 0.0)
            self._profiles[key] = prof
            self._profile_keys[id(prof)] = key
        return prof

    def _key(
        self, merchant: str | None, channel: str | None, method: str | None, country: str | None, carrier: str | None
    ) -> ProfileKey:
        # Each scope's table read straight (KEY_ORDER): twice per order.created on the hot path.
        return (
            merchant if merchant is not None and merchant in self.merchant_overrides else None,
            channel if channel is not None and channel in self.channel_overrides else None,
            method if method is not None and method in self.payment_method_overrides else None,
            country if country is not None and country in self.country_overrides else None,
            carrier if carrier is not None and carrier in self.carrier_overrides else None,
        )

    def profile_key(self, profile: Profile) -> ProfileKey:
        """The segments a profile was built for: what a state snapshot stores instead."""
        return self._profile_keys[id(profile)]

    def with_carrier(self, profile: Profile, carrier: str | None) -> Profile:
        """The profile of the same order once its carrier is known (shipment.created)."""
        m, ch, pm, co, _ = self.profile_key(profile)
        return self.profile(m, ch, pm, co, carrier)

    def segment_layers(self) -> list[dict[str, Override]]:
        """Every override layer of every scope (for rules that need the largest window set anywhere)."""
        return [layer for scope in SEGMENTS for layer in self.overrides(scope).values()]

    def is_enabled(self, code: str) -> bool:
        return self.enabled[code]


def _known_rule(code: str, path: str) -> None:
    if code not in RULES:
        msg = f"config key {path}: unknown rule {code!r}; expected one of {', '.join(RULES)}"
        raise ConfigError(msg)


def _segment_name(scope: str, name: str) -> None:
    if scope == "channel" and name not in CHANNELS:
        msg = f"config key channel.{name}: unknown channel; expected one of {', '.join(CHANNELS)}"
        raise ConfigError(msg)
    if scope == "country" and not _COUNTRY.match(name):
        msg = f"config key country.{name}: expected an ISO 3166 alpha-2 code in capitals, e.g. DE"
        raise ConfigError(msg)
    if not _SEGMENT_NAME.match(name):
        msg = f"config key {scope}.{name!r}: expected 1 to 128 printable characters"
        raise ConfigError(msg)


def _override(code: str, table: dict[str, Any], path: str) -> Override:
    _known_rule(code, path)
    if code in GLOBAL_PARAMS:
        msg = f"config key {path}: {code} is keyed by address/customer/provider; set it under [rules.{code}] only"
        raise ConfigError(msg)
    enabled, threshold = None, None
    for key, value in table.items():
        if key == "enabled":
            enabled = _bool(value, f"{path}.enabled")
        elif key == "threshold" and code in DEFAULT_THRESHOLDS:
            threshold = parse_duration(value, f"{path}.threshold")
        else:
            allowed = "enabled, threshold" if code in DEFAULT_THRESHOLDS else "enabled"
            msg = f"config key {path}.{key}: unknown; expected {allowed}"
            raise ConfigError(msg)
    return enabled, threshold


def _table(doc: dict[str, Any], key: str, path: str | None = None) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        msg = f"config key {path or key}: expected a table, got {type(value).__name__}"
        raise ConfigError(msg)
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        msg = f"config key {path}: expected true or false, got {value!r}"
        raise ConfigError(msg)
    return value


def _param(key: str, value: Any, path: str) -> float:
    if key in _DURATION_PARAMS:
        return parse_duration(value, path)
    if key in _COUNT_PARAMS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"config key {path}: expected a whole number >= 1, got {value!r}"
            raise ConfigError(msg)
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        msg = f"config key {path}: expected a fraction in (0, 1], got {value!r}"
        raise ConfigError(msg)
    return float(value)
