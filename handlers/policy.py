"""The action policy: the `[actions]` section of the handlers TOML file, one table per action code
saying whether it runs automatically, waits for a person's approval, or is off, and its caps.

```toml
[actions.refund_duplicate_payment]
mode = "auto"          # auto | approval | off
max_amount = "50.00"   # above it (or when the amount is unknown) it waits for approval; "none": no cap
max_attempts = 3       # tries to deliver the command per case
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import ConfigError

__all__ = [
    "ACTION_CODES",
    "APPROVAL_BY_DEFAULT",
    "BLOCKLIST_ACTIONS",
    "DEFAULT_MAX_AMOUNT",
    "MONEY_ACTIONS",
    "ActionPolicy",
    "ActionRule",
    "Mode",
    "config_error",
    "load_policy",
    "parse_policy",
    "read_handlers_config",
]

Mode = Literal["auto", "approval", "off"]

BLOCKLIST_ACTIONS: dict[str, str] = {
    "NEW_ACCOUNT_BURST": "blocklist_customer",
    "ADDRESS_CLUSTER": "blocklist_address",
}
"""Rules whose case also asks to blocklist its subject (RULES.md: the `blocklist` topic)."""

ACTION_CODES: tuple[str, ...] = tuple(sorted({r.action for r in RULES.values()} | set(BLOCKLIST_ACTIONS.values())))

MONEY_ACTIONS = frozenset({"refund_duplicate_payment", "retry_refund", "expedite_refund"})
"""Actions that pay money out: they run automatically only under `max_amount`."""

DEFAULT_MAX_AMOUNT = Decimal("50.00")

APPROVAL_BY_DEFAULT = frozenset(
    {
        # Holding, cancelling, intercepting or blocking is hard to undo and lands on a customer:
        # a person decides.
        "block_refund_and_review",
        "hold_orders_for_review",
        "replenish_or_cancel",
        "intercept_shipment",
        "reship_or_refund",
        "offer_substitute_or_refund",
        "blocklist_customer",
        "blocklist_address",
        # Moves every payment of the shop to another provider: one person confirms it.
        "failover_payment_provider",
    }
)


class ActionRule(BaseModel):
    """One action code's policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    EXPECTED: ClassVar[dict[str, str]] = {
        "mode": "one of auto, approval, off",
        "max_amount": 'a decimal amount >= 0 such as "50.00", or "none" for no cap',
        "max_attempts": "an integer >= 1",
    }

    mode: Mode = "auto"
    """auto: send the command at once; approval: wait for a person; off: never."""
    max_amount: Decimal | None = Field(None, ge=0)
    """In `auto` mode, a command whose amount is above this (or unknown) waits for approval;
    `"none"` in the file removes the cap."""
    max_attempts: StrictInt = Field(3, ge=1)
    """Tries to deliver one action's command for one case; then it is `capped`."""

    @field_validator("max_amount", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # TOML `true` would otherwise read as an amount of 1
            msg = "a boolean is not an amount"
            raise ValueError(msg)
        if isinstance(value, str) and value.strip().lower() == "none":
            return None  # TOML has no null
        return value


def _defaults() -> dict[str, ActionRule]:
    rules = {}
    for code in ACTION_CODES:
        if code in MONEY_ACTIONS:
            rules[code] = ActionRule(mode="auto", max_amount=DEFAULT_MAX_AMOUNT)
        elif code in APPROVAL_BY_DEFAULT:
            rules[code] = ActionRule(mode="approval")
        else:
            rules[code] = ActionRule(mode="auto")
    return rules


@dataclass(frozen=True, slots=True)
class ActionPolicy:
    """The policy of every action code; `rule(code)` of a code it does not know asks for approval."""

    rules: Mapping[str, ActionRule]

    @classmethod
    def default(cls) -> ActionPolicy:
        return cls(_defaults())

    def rule(self, code: str) -> ActionRule:
        found = self.rules.get(code)
        # A newer detector may recommend an action this policy predates: a person looks first.
        return found if found is not None else ActionRule(mode="approval")


def config_error(section: str, exc: ValidationError, expected: Mapping[str, str]) -> ConfigError:
    """A ConfigError naming the section and key of the first problem pydantic found."""
    err = exc.errors(include_url=False)[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    where = f"handlers config {section} {key}".rstrip()
    if err["type"] == "extra_forbidden":
        msg = f"{where}: unknown key; expected one of {', '.join(expected)}"
    elif err["type"] == "missing":
        msg = f"{where}: missing; expected {expected.get(key, 'a value')}"
    else:
        msg = f"{where}: expected {expected.get(key, err['msg'])}, got {err.get('input')!r}"
    return ConfigError(msg)


def read_handlers_config(path: str | Path | None) -> dict[str, Any]:
    """The handlers TOML file as a dict ({} for None), or a ConfigError naming the file."""
    if path is None:
        return {}
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        msg = f"handlers config {path}: cannot be read ({exc.strerror})"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"handlers config {path}: not valid TOML ({exc})"
        raise ConfigError(msg) from exc


def parse_policy(doc: Mapping[str, Any]) -> ActionPolicy:
    """The policy from a parsed handlers config: defaults, overridden key by key by `[actions.<code>]`."""
    section = doc.get("actions", {})
    if not isinstance(section, dict):
        msg = f"handlers config [actions]: expected a table of action codes, got {section!r}"
        raise ConfigError(msg)
    rules = _defaults()
    for code, table in section.items():
        if code not in rules:
            msg = f"handlers config [actions.{code}]: unknown action code; expected one of {', '.join(ACTION_CODES)}"
            raise ConfigError(msg)
        if not isinstance(table, dict):
            msg = f"handlers config [actions] {code}: expected a table (mode, max_amount, max_attempts), got {table!r}"
            raise ConfigError(msg)
        try:
            rules[code] = ActionRule.model_validate({**rules[code].model_dump(exclude_unset=True), **table})
        except ValidationError as exc:
            raise config_error(f"[actions.{code}]", exc, ActionRule.EXPECTED) from exc
    return ActionPolicy(rules)


def load_policy(path: str | Path | None) -> ActionPolicy:
    """The action policy of the handlers config file at `path` (the defaults for None)."""
    return parse_policy(read_handlers_config(path))
