"""Rule configuration: defaults from RULES.md, one TOML file, overrides per merchant and channel.

Lookups on the hot path go through `RulesConfig.profile(merchant, channel)`, a cached plain dict.

    [rules.PAYMENT_TIMEOUT]            # defaults for everyone
    threshold = "45m"
    [rules.ADDRESS_CLUSTER]            # windowed rules take their own parameters
    window = "24h"
    min_orders = 5
    [channel.marketplace.rules.SHIPMENT_NOT_CREATED]
    threshold = "72h"
    [merchant."m-42".rules.PAYMENT_TIMEOUT]   # merchant beats channel beats defaults
    enabled = false
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.catalog import RULES
from orderwatch.errors import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "GLOBAL_PARAMS", "Profile", "RulesConfig", "parse_duration"]

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
_DURATION_PARAMS = {"threshold", "window", "account_age"}
_COUNT_PARAMS = {"min_orders", "min_customers", "min_failures"}

# A profile maps rule code -> threshold seconds, or None when the rule is disabled for it.
Profile = dict[str, float | None]

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
    merchant_overrides: dict[str, dict[str, tuple[bool | None, float | None]]] = field(default_factory=dict)
    channel_overrides: dict[str, dict[str, tuple[bool | None, float | None]]] = field(default_factory=dict)
    _profiles: dict[tuple[str | None, str | None], Profile] = field(default_factory=dict, repr=False)
    _profile_keys: dict[int, tuple[str | None, str | None]] = field(default_factory=dict, repr=False)

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
            if key not in ("rules", "merchant", "channel", "amount_tolerance"):
                msg = f"config key {key}: unknown; expected one of rules, merchant, channel, amount_tolerance"
                raise ConfigError(msg)
        if "amount_tolerance" in doc:
            tol = doc["amount_tolerance"]
            if isinstance(tol, bool) or not isinstance(tol, int | float) or tol < 0:
                msg = f"config key amount_tolerance: expected a number >= 0, got {tol!r}"
                raise ConfigError(msg)
            cfg.amount_tolerance = float(tol)
        for code, table in _table(doc, "rules").items():
            cfg._apply_default(code, _table({"t": table}, "t", f"rules.{code}"))
        for scope, target in (("merchant", cfg.merchant_overrides), ("channel", cfg.channel_overrides)):
            for name, section in _table(doc, scope).items():
                if scope == "channel" and name not in CHANNELS:
                    msg = f"config key channel.{name}: unknown channel; expected one of {', '.join(CHANNELS)}"
                    raise ConfigError(msg)
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

    def profile(self, merchant: str | None = None, channel: str | None = None) -> Profile:
        """Thresholds for an order of this merchant and channel (None = disabled)."""
        key = (merchant, channel)
        prof = self._profiles.get(key)
        if prof is None:
            prof = {c: (self.thresholds.get(c, 0.0) if self.enabled[c] else None) for c in RULES}
            layers = [self.channel_overrides.get(channel or ""), self.merchant_overrides.get(merchant or "")]
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

    def profile_key(self, profile: Profile) -> tuple[str | None, str | None]:
        """The (merchant, channel) a profile was built for: what a state snapshot stores instead."""
        return self._profile_keys[id(profile)]

    def is_enabled(self, code: str) -> bool:
        return self.enabled[code]


def _known_rule(code: str, path: str) -> None:
    if code not in RULES:
        msg = f"config key {path}: unknown rule {code!r}; expected one of {', '.join(RULES)}"
        raise ConfigError(msg)


def _override(code: str, table: dict[str, Any], path: str) -> tuple[bool | None, float | None]:
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
