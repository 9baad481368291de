"""What callers send, parsed strictly: integers of ASCII digits within bounds, bodies bounded in
size and depth, names and ids bounded and printable. Every refusal is an InputError (a 4xx with a
message), never another exception."""

from __future__ import annotations

import json

import pytest

from orderwatch.streams.console.ops import (
    MAX_BODY,
    InputError,
    body_name,
    body_note,
    json_depth,
    parse_body,
    parse_filters,
    query_int,
    valid_id,
)


@pytest.mark.parametrize(
    "raw", ["²", "٣", "9" * 5000, "+5", " 5", "5 ", "1e3", "-1", "0x10", "", "1_000", "５", "501", "0"]
)
def test_query_int_refuses_anything_but_ascii_digits_in_bounds(raw: str) -> None:
    with pytest.raises(InputError) as err:
        query_int({"limit": raw}, "limit", 50, 1, 500)
    assert err.value.status == 422
    assert err.value.message.startswith("query parameter limit: expected an integer from 1 to 500")
    assert len(err.value.message) < 120  # a 5,000-digit value is not echoed whole


def test_query_int_accepts_digits_in_bounds() -> None:
    assert query_int({"limit": "500"}, "limit", 50, 1, 500) == 500
    assert query_int({}, "limit", 50, 1, 500) == 50


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"note": "[[[[[[[[[[ {{{{ ]]"}', 1),
        (b'{"note": "a \\" [[[[ \\\\"}', 1),
        (b"[" * 100_000, 100_000),
        (b"", 0),
    ],
)
def test_json_depth(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth


@pytest.mark.parametrize(
    ("raw", "status", "start"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 413, "body: at most"),
        (b"[" * 5_000 + b"]" * 5_000, 422, "body: nested more than"),
        (b'{"note": ' + b"[" * 1000 + b"]" * 1000 + b"}", 422, "body: nested"),
        (b"\xff\xfe", 422, "body: not JSON"),
        (b'{"note": "x"', 422, "body: not JSON"),
        (b"[]", 422, "body: expected a JSON object"),
        (b'"note"', 422, "body: expected a JSON object"),
        (b'{"who": "mallory"}', 422, "body who: not accepted"),
        (b'{"colour": 1}', 422, "body colour: unknown key"),
        (b'{"\\u0000\\n": 1}', 422, "body (not shown): unknown key"),
        (b"1" * (MAX_BODY + 1), 413, "body: at most"),
    ],
)
def test_parse_body_refuses_with_a_4xx(raw: bytes, status: int, start: str) -> None:
    with pytest.raises(InputError) as err:
        parse_body(raw, ("note",))
    assert (err.value.status, err.value.message[: len(start)]) == (status, start)


def test_parse_body_and_its_fields() -> None:
    assert parse_body(b"", ("note",)) == {}
    assert parse_body(b"  ", ("note",)) == {}
    doc = parse_body(json.dumps({"note": " called the carrier "}).encode(), ("note",))
    assert body_note(doc) == "called the carrier"
    assert body_note({"note": "   "}) is None
    for bad in ({"note": 12}, {"note": "x" * 2001}, {"note": ["x"]}):
        with pytest.raises(InputError):
            body_note(bad)
    assert body_name({}, "owner") == (False, None)
    assert body_name({"owner": None}, "owner") == (True, None)
    assert body_name({"owner": ""}, "owner") == (True, None)
    assert body_name({"owner": "ana.s@ops"}, "owner") == (True, "ana.s@ops")
    for bad in ("a b", "x" * 65, 3, "ana\n", "<script>"):
        with pytest.raises(InputError):
            body_name({"owner": bad}, "owner")


def test_filters_and_ids() -> None:
    f = parse_filters({"status": "open", "team": "payments", "q": "O-12", "sort": "new"}, default_sort="due")
    assert (f.status, f.team, f.q, f.sort) == ("open", "payments", "O-12", "new")
    assert f.as_query() == {"status": "open", "team": "payments", "q": "O-12", "sort": "new"}
    assert parse_filters({"status": ""}, default_sort="due").as_query() == {"status": "all"}
    unresolved = parse_filters({}, default_sort="due", default_status="unresolved")
    assert (unresolved.status, unresolved.as_query()) == ("unresolved", {"status": "unresolved"})
    assert parse_filters({"status": "all"}, default_sort="due", default_status="unresolved").status is None
    for query in ({"status": "nope"}, {"category": "x"}, {"team": "a b"}, {"q": "x" * 65}, {"sort": "random"}):
        with pytest.raises(InputError) as err:
            parse_filters(query, default_sort="due")
        assert err.value.status == 422
    assert valid_id("o-000123", "order") == "o-000123"
    for bad in ("", "a\nb", "x" * 201, "a/b", "é"):
        with pytest.raises(InputError) as err:
            valid_id(bad, "order")
        assert err.value.status == 404
