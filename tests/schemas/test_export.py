"""`orderwatch schema --out DIR`: one JSON Schema per input event type and per exception type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orderwatch.cli import main
from orderwatch.schemas.events import EVENT_TYPES

EXCEPTION_TYPES = ("exception.opened", "exception.resolved", "exception.escalated")
COMMAND_TYPES = ("action.requested",)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas") / "nested" / "dir"  # created if missing
    assert main(["schema", "--out", str(out)]) == 0
    return out


def _load(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / f"{name}.schema.json").read_text())


def test_writes_one_schema_per_event_type_and_exception_type(exported: Path) -> None:
    names = sorted(p.name for p in exported.iterdir())
    expected = sorted(f"{t}.schema.json" for t in (*EVENT_TYPES, *EXCEPTION_TYPES, *COMMAND_TYPES))
    assert len(EVENT_TYPES) == 18
    assert names == expected
    assert len(names) == 22


def test_reports_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert "22" in capsys.readouterr().out


@pytest.mark.parametrize("name", [*EVENT_TYPES, *EXCEPTION_TYPES, *COMMAND_TYPES])
def test_each_schema_is_json_with_an_id_and_pins_its_type(exported: Path, name: str) -> None:
    schema = _load(exported, name)  # valid JSON, or this raises
    assert isinstance(schema["$id"], str)
    assert schema["$id"].endswith(f"/{name}.schema.json")
    assert schema["type"] == "object"
    assert schema["properties"]["type"]["const"] == name
    assert {"id", "type", "time", "subject", "data"} <= set(schema["required"])


def test_ids_are_unique(exported: Path) -> None:
    ids = [_load(exported, n)["$id"] for n in (*EVENT_TYPES, *EXCEPTION_TYPES, *COMMAND_TYPES)]
    assert len(set(ids)) == len(ids)


def test_order_created_requires_data_and_its_fields(exported: Path) -> None:
    schema = _load(exported, "order.created")
    assert "data" in schema["required"]
    assert {"specversion", "id", "source", "type", "time", "subject"} <= set(schema["required"])
    ref = schema["properties"]["data"]["$ref"]
    data = schema["$defs"][ref.rsplit("/", 1)[-1]]
    assert {
        "order_id",
        "customer_id",
        "customer_since",
        "channel",
        "items",
        "total_amount",
        "currency",
        "shipping_address",
    } <= set(data["required"])
    assert "merchant_id" not in data["required"]
    assert "promised_ship_by" not in data["required"]
    assert data["properties"]["channel"]["enum"] == ["web", "app", "marketplace", "pos"]
    assert schema["properties"]["time"]["format"] == "date-time"


def test_money_is_a_number_or_a_string_in_the_schema(exported: Path) -> None:
    schema = _load(exported, "payment.succeeded")
    data = schema["$defs"][schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    kinds = {alt.get("type") for alt in data["properties"]["amount"]["anyOf"]}
    assert kinds == {"number", "string"}


def test_exception_schemas_describe_the_output_contract(exported: Path) -> None:
    schema = _load(exported, "exception.resolved")
    data = schema["$defs"][schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    assert {
        "exception_id",
        "rule",
        "category",
        "severity",
        "status",
        "subject",
        "detected_at",
        "event_time",
        "handle_by",
        "summary",
        "evidence",
        "recommended_action",
    } <= set(data["required"])
    assert set(data["properties"]["severity"]["enum"]) == {"critical", "high", "medium", "low"}


def test_action_command_schema_describes_the_command_contract(exported: Path) -> None:
    schema = _load(exported, "action.requested")
    data = schema["$defs"][schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    assert {"action", "idempotency_key", "exception_id", "rule", "params", "mode", "requested_at"} <= set(
        data["required"]
    )
    assert data["properties"]["mode"]["enum"] == ["auto", "approved"]
    params = schema["$defs"][data["properties"]["params"]["$ref"].rsplit("/", 1)[-1]]
    assert params["additionalProperties"] is False
    assert not {"phone", "contact_phone", "shipping_address", "address", "email"} & set(params["properties"])
