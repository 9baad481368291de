"""The handlers config file (TOML): `[escalation]`, `[incidents]`, `[actions.<code>]` and
`[[webhooks]]`, read by one loader, `load_handlers_config`.

A wrong value stops start-up with a ConfigError naming the section, the key and what it expects,
e.g. `handlers config [incidents] threshold: expected an integer >= 2, got 1`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic.fields import FieldInfo

from orderwatch.errors import ConfigError
from orderwatch.handlers.notify import Channel, parse_channels
from orderwatch.handlers.policy import ActionPolicy, parse_policy, read_handlers_config

__all__ = [
    "DIMENSIONS",
    "SECTIONS",
    "EscalationConfig",
    "HandlersConfig",
    "IncidentConfig",
    "OwnersConfig",
    "load_handlers_config",
    "load_section",
    "read_toml",
]

Dimension = Literal["carrier", "provider", "warehouse_id", "sku"]
DIMENSIONS: tuple[str, ...] = Dimension.__args__  # type: ignore[attr-defined]

M = TypeVar("M", bound=BaseModel)


def _default_dimensions() -> list[Dimension]:
    return ["carrier", "provider", "warehouse_id", "sku"]


class EscalationConfig(BaseModel):
    """`[escalation]`: when an unacknowledged case escalates."""

    # strict: a TOML string "2" or a boolean is a mistake in the file, not something to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = True
    """False: cases never escalate (nothing is scheduled)."""
    level_2_factor: float = Field(2.0, gt=1)
    """Level 2 is due at detected_at + factor x the severity's handling time (level 1 at handle_by)."""


class IncidentConfig(BaseModel):
    """`[incidents]`: how exceptions sharing a cause are grouped into one incident."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    window_minutes: float = Field(30.0, gt=0)
    """A member joins an incident when detected within this many minutes of its previous member."""
    threshold: int = Field(3, ge=2)
    """Members at which a forming incident opens (and pages once); later members are suppressed."""
    dimensions: list[Dimension] = Field(default_factory=lambda: _default_dimensions())
    """Evidence keys that name a shared cause, in order of preference; empty disables grouping."""


TEAM_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"
"""Team and owner names: they key Redis indexes and show on pages, so a plain bounded word."""

TeamName = Annotated[str, StringConstraints(pattern=TEAM_NAME)]


class OwnersConfig(BaseModel):
    """`[owners]`: the team a new case belongs to (the seeds' "dedicated owner per exception
    type"). The most specific match wins: rule, then merchant, then category, then `default_team`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    default_team: TeamName | None = None
    """The team of a case nothing below matches (None: no team until someone assigns one)."""
    by_rule: dict[str, TeamName] = Field(default_factory=dict)
    """Rule code -> team, e.g. `PAYMENT_TIMEOUT = "payments"`."""
    by_merchant: dict[str, TeamName] = Field(default_factory=dict)
    """Merchant id (the evidence's `merchant_id`) -> team, e.g. `"m-3" = "key-accounts"`."""
    by_category: dict[str, TeamName] = Field(default_factory=dict)
    """Category -> team, e.g. `fulfilment = "warehouse"`."""

    def team_for(self, rule: str, category: str, merchant: str | None) -> str | None:
        if rule in self.by_rule:
            return self.by_rule[rule]
        if merchant is not None and merchant in self.by_merchant:
            return self.by_merchant[merchant]
        return self.by_category.get(category, self.default_team)


def _type_phrase(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return "a name (1 to 64 of letters, digits, _ . @ -)"
    if annotation is type(None):
        return "unset"
    if origin is dict:
        return f"a table of {_type_phrase(typing.get_args(annotation)[1])}"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin is Literal:
        values = [repr(v) for v in typing.get_args(annotation)]
        return "one of " + ", ".join(values)
    if origin in (list, tuple):
        (item, *_) = typing.get_args(annotation)
        if typing.get_origin(item) is Literal:
            values = [repr(v) for v in typing.get_args(item)]
            listed = ", ".join(values[:-1]) + " or " + values[-1] if len(values) > 1 else values[0]
            return f"a list of {listed}"
        return f"a list of {_type_phrase(item)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_phrase(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _expected(info: FieldInfo) -> str:
    phrase = _type_phrase(info.annotation)
    for m in info.metadata:
        if isinstance(m, annotated_types.Gt):
            phrase += f" > {m.gt}"
        elif isinstance(m, annotated_types.Ge):
            phrase += f" >= {m.ge}"
        elif isinstance(m, annotated_types.Lt):
            phrase += f" < {m.lt}"
        elif isinstance(m, annotated_types.Le):
            phrase += f" <= {m.le}"
    return phrase


def load_section(doc: Mapping[str, Any], name: str, model: type[M]) -> M:
    """Section `[name]` of a parsed TOML document as `model` (defaults when the section is absent),
    or a ConfigError naming the key, what it expects and what it got."""
    section = doc.get(name, {})
    if not isinstance(section, Mapping):
        msg = f"handlers config [{name}]: expected a table, got {section!r}"
        raise ConfigError(msg)
    try:
        return model.model_validate(dict(section))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        fields = model.model_fields
        if err["type"] == "extra_forbidden" or key not in fields:
            msg = f"handlers config [{name}] {key}: unknown key, expected one of {', '.join(fields)}"
        else:
            msg = f"handlers config [{name}] {key}: expected {_expected(fields[key])}, got {section[key]!r}"
        raise ConfigError(msg) from exc


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed handlers config file, or a ConfigError naming the file and what is wrong."""
    return read_handlers_config(path)


SECTIONS = ("escalation", "incidents", "actions", "webhooks", "owners")


@dataclass(frozen=True, slots=True)
class HandlersConfig:
    """Every section of the handlers config file (`ORDERWATCH_HANDLERS_CONFIG`): escalation,
    incidents, the action policy and the webhook channels."""

    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    incidents: IncidentConfig = field(default_factory=IncidentConfig)
    actions: ActionPolicy = field(default_factory=ActionPolicy.default)
    webhooks: tuple[Channel, ...] = ()
    owners: OwnersConfig = field(default_factory=OwnersConfig)

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> HandlersConfig:
        unknown = [k for k in doc if k not in SECTIONS]
        if unknown:
            msg = f"handlers config [{unknown[0]}]: unknown section, expected one of {', '.join(SECTIONS)}"
            raise ConfigError(msg)
        return cls(
            escalation=load_section(doc, "escalation", EscalationConfig),
            incidents=load_section(doc, "incidents", IncidentConfig),
            actions=parse_policy(doc),
            webhooks=tuple(parse_channels(doc)),
            owners=_owners(doc),
        )

    def describe(self) -> dict[str, Any]:
        """The effective settings, JSON-ready and without secrets: a webhook shows only the scheme
        and host of its URL (a URL may carry a token) and the names of its headers."""
        hooks = []
        for c in self.webhooks:
            doc = c.model_dump(mode="json", exclude={"url", "headers"})
            hooks.append({"name": c.name, "url": _redacted_url(c.url), **doc, "headers": sorted(c.headers)})
        return {
            "escalation": self.escalation.model_dump(mode="json"),
            "incidents": self.incidents.model_dump(mode="json"),
            "actions": {code: rule.model_dump(mode="json") for code, rule in sorted(self.actions.rules.items())},
            "webhooks": hooks,
            "owners": self.owners.model_dump(mode="json"),
        }


def _owners(doc: Mapping[str, Any]) -> OwnersConfig:
    owners = load_section(doc, "owners", OwnersConfig)
    from orderwatch.detectors.catalog import RULES  # the catalog is pure data; imported here to keep config light

    unknown = [r for r in owners.by_rule if r not in RULES]
    if unknown:
        msg = f"handlers config [owners.by_rule] {unknown[0]}: unknown rule, expected a rule code of the catalog"
        raise ConfigError(msg)
    categories = {r.category for r in RULES.values()}
    unknown = [c for c in owners.by_category if c not in categories]
    if unknown:
        known = ", ".join(sorted(categories))
        msg = f"handlers config [owners.by_category] {unknown[0]}: unknown category, expected one of {known}"
        raise ConfigError(msg)
    return owners


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + "/..."


def load_handlers_config(path: str | Path | None) -> HandlersConfig:
    """Every section of the TOML file at `path` (settings' `handlers_config`), defaults when None;
    a ConfigError names the section and key of the first wrong value."""
    return HandlersConfig() if path is None else HandlersConfig.from_toml(read_toml(path))
