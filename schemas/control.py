"""Wire models of the runtime's control messages on its internal topics: watermarks, DUPLICATE_ORDER
adoptions and ticks. They are typed and validated like any input (a bad one is dead-lettered).

A control message is told from an event by its Kafka header `orderwatch-control` (the kind and the
version, e.g. b"watermark/1"), never by the bytes of its value: events and control messages share
the repartition topics, and a header cannot be forged by an event's content. `decode_control` is
the one door through which those bytes become a model.

Version 1 of the worker (before these models) wrote them without a header, recognised by byte
prefixes (`{"wm":`, `{"id":"adopt:`, `tick`). A rolling upgrade can leave such messages in the
internal topics, or have an old worker send them while a new one reads, so `decode_control` still
reads those legacy forms; drop them one release after this one.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orderwatch.errors import InvalidEvent

__all__ = [
    "CONTROL_HEADER",
    "Adoption",
    "Control",
    "Tick",
    "Watermark",
    "decode_control",
    "decode_tick",
    "encode",
]

CONTROL_HEADER = "orderwatch-control"
"""Kafka header naming a control message's kind and version: b"<kind>/<v>"."""

_MAX_BYTES = 256 * 1024
"""Largest control message read: a watermark is ~100 bytes, an adoption a few kB."""


class _Control(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)
    v: Literal[1] = 1


class Watermark(_Control):
    """Upstream partition `source_topic[source_partition]`, owned by another worker, has forwarded
    to this repartition partition every event up to `forwarded_upto` (event time, epoch seconds,
    in event mode no further than the sending worker's arrival clock; None: nothing yet) and,
    when `caught_up`, has nothing more to forward right now."""

    kind: Literal["watermark"] = "watermark"
    source_topic: str = Field(min_length=1, max_length=249)  # Kafka's own limit on a topic name
    source_partition: int = Field(ge=0, le=100_000)
    forwarded_upto: float | None = Field(default=None, allow_inf_nan=False)
    caught_up: bool


class Adoption(_Control):
    """A DUPLICATE_ORDER exception the customer agent opened, sent to the order it names so that
    the order's own state owns (and resolves) it. `exception` is the record (ExceptionRecord
    fields)."""

    kind: Literal["adoption"] = "adoption"
    id: str = Field(min_length=1, max_length=512)
    event_time: float = Field(allow_inf_nan=False)
    exception: dict[str, Any]

    @field_validator("exception")
    @classmethod
    def _record(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Import here: detectors import nothing from schemas/control, and records stay the one
        # definition of what an exception record holds.
        from orderwatch.detectors.records import ExceptionRecord

        try:
            ExceptionRecord.from_dict(value)
        except (TypeError, ValueError, KeyError) as exc:
            msg = f"not an exception record ({type(exc).__name__})"
            raise ValueError(msg) from None
        if value.get("rule") != "DUPLICATE_ORDER" or not value.get("order_id"):
            msg = "only a DUPLICATE_ORDER record naming an order is adopted"
            raise ValueError(msg)
        return value

    @property
    def type(self) -> str:
        """Routing name, as events have one (the order detector adopts what has this type)."""
        return "orderwatch.adopt"


class Tick(_Control):
    """Wakes one agent partition so that it applies what its clock allows (no payload)."""

    kind: Literal["tick"] = "tick"


Control = Watermark | Adoption | Tick

_MODELS: dict[str, type[_Control]] = {"watermark": Watermark, "adoption": Adoption, "tick": Tick}


def encode(message: Control) -> tuple[list[tuple[str, bytes]], bytes]:
    """(headers, value) to send for one control message."""
    header = f"{message.kind}/{message.v}".encode()
    return [(CONTROL_HEADER, header)], message.model_dump_json().encode()


def _header(headers: Any) -> bytes | None:
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name == CONTROL_HEADER:
            return bytes(value) if value is not None else b""
    return None


def decode_control(headers: Any, value: bytes | None) -> Control | None:
    """The control message a record of a repartition topic carries, or None when it is an event.
    A record that claims to be control (header or legacy form) but does not validate raises
    `InvalidEvent("invalid_control", ...)`: the agent dead-letters it and moves on."""
    header = _header(headers)
    raw = value or b""
    if header is None:
        return _legacy(raw)
    kind, _, version = header.decode("ascii", "replace").partition("/")
    model = _MODELS.get(kind)
    if model is None or version != "1":
        raise InvalidEvent("invalid_control", f"unknown control message kind or version {header[:40]!r}")
    return _validate(model, raw)


def decode_tick(headers: Any, value: bytes | None) -> Tick:
    """A record of a ticks topic: a tick, whatever else it claims is invalid."""
    message = decode_control(headers, value) if _header(headers) is not None else _legacy_tick(value or b"")
    if not isinstance(message, Tick):
        raise InvalidEvent("invalid_control", "a ticks topic carries ticks only")
    return message


def _validate(model: type[_Control], raw: bytes) -> Control:
    if len(raw) > _MAX_BYTES:
        raise InvalidEvent("invalid_control", f"{len(raw)} bytes, more than the {_MAX_BYTES} a control message has")
    try:
        message = model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(model.__name__, exc) from exc
    return message  # type: ignore[return-value]  # one of the Control union by construction


def _invalid(what: str, exc: ValidationError) -> InvalidEvent:
    """Where and what failed, never the value (a forged control message may carry anything)."""
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "message"
    return InvalidEvent("invalid_control", f"{what}: {where}: {err['msg']}")


# Legacy forms (worker version 1, no header): read for one release, see the module docstring.
_LEGACY_WATERMARK = b'{"wm":'
_LEGACY_ADOPTION = b'{"id":"adopt:'


def _legacy(raw: bytes) -> Control | None:
    if raw.startswith(_LEGACY_WATERMARK):
        doc = _json(raw)
        return _validate_doc(
            Watermark,
            {
                "source_topic": doc.get("wm"),
                "source_partition": doc.get("q"),
                "forwarded_upto": doc.get("t"),
                "caught_up": doc.get("idle"),
            },
        )
    if raw.startswith(_LEGACY_ADOPTION):
        doc = _json(raw)
        return _validate_doc(Adoption, {"id": doc.get("id"), "event_time": doc.get("t"), "exception": doc.get("data")})
    return None


def _legacy_tick(raw: bytes) -> Tick:
    if raw != b"tick":
        raise InvalidEvent("invalid_control", "a ticks topic carries ticks only")
    return Tick()


def _json(raw: bytes) -> dict[str, Any]:
    if len(raw) > _MAX_BYTES:
        raise InvalidEvent("invalid_control", f"{len(raw)} bytes, more than the {_MAX_BYTES} a control message has")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidEvent("invalid_control", "legacy control message: not JSON") from exc
    if not isinstance(doc, dict):
        raise InvalidEvent("invalid_control", "legacy control message: not a JSON object")
    return doc


def _validate_doc(model: type[_Control], doc: dict[str, Any]) -> Control:
    try:
        message = model.model_validate(doc)
    except ValidationError as exc:
        raise _invalid(f"legacy {model.__name__}", exc) from exc
    return message  # type: ignore[return-value]
