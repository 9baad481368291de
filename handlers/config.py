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
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from handlers.notify import Channel, parse_channels
from handlers.policy import ActionPolicy, parse_policy, read_handlers_config
from orderwatch.errors import ConfigError

__all__ = [
    "DIMENSIONS",
    "SECTIONS",
    "EscalationConfig",
    "HandlersConfig",
    "IncidentConfig",
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


def _type_phrase(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
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


SECTIONS = ("escalation", "incidents", "actions", "webhooks")


@dataclass(frozen=True, slots=True)
class HandlersConfig:
    """Every section of the handlers config file (`ORDERWATCH_HANDLERS_CONFIG`): escalation,
    incidents, the action policy and the webhook channels."""

    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    incidents: IncidentConfig = field(default_factory=IncidentConfig)
    actions: ActionPolicy = field(default_factory=ActionPolicy.default)
    webhooks: tuple[Channel, ...] = ()

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
        }


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + "/..."


def load_handlers_config(path: str | Path | None) -> HandlersConfig:
    """Every section of the TOML file at `path` (settings' `handlers_config`), defaults when None;
    a ConfigError names the section and key of the first wrong value."""
    return HandlersConfig() if path is None else HandlersConfig.from_toml(read_toml(path))
