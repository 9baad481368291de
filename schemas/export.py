"""JSON Schema export: one file per event type (input events, exceptions, action commands), for
consumers that validate without Python."""

from __future__ import annotations

import json
from pathlib import Path

from orderwatch.schemas.action_command import ActionCommand
from orderwatch.schemas.events import EVENT_MODELS
from orderwatch.schemas.exception_event import ExceptionEvent

__all__ = ["write_schemas"]


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EVENT_MODELS.items():
        path = out / f"{name}.schema.json"
        schema = model.model_json_schema()
        schema["$id"] = f"https://orderwatch.dev/schemas/{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    for kind in ("exception.opened", "exception.resolved", "exception.escalated"):
        path = out / f"{kind}.schema.json"
        schema = ExceptionEvent.model_json_schema()
        schema["properties"]["type"] = {"const": kind, "type": "string"}
        schema["$id"] = f"https://orderwatch.dev/schemas/{kind}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = out / "action.requested.schema.json"
    schema = ActionCommand.model_json_schema()
    schema["properties"]["type"] = {"const": "action.requested", "type": "string"}
    schema["$id"] = "https://orderwatch.dev/schemas/action.requested.schema.json"
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    written.append(path)
    return written
