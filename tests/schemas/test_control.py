"""Control messages of the internal topics: typed, versioned by header, validated like any input;
the legacy byte forms of worker version 1 still read (rolling upgrade)."""

from __future__ import annotations

import json

import pytest

from orderwatch.errors import InvalidEvent
from orderwatch.schemas.control import (
    CONTROL_HEADER,
    Adoption,
    Tick,
    Watermark,
    decode_control,
    decode_tick,
    encode,
)


def _record(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "exception_id": "ex-1",
        "rule": "DUPLICATE_ORDER",
        "subject": "c-1",
        "order_id": "o-1",
        "severity": "medium",
        "detected_at": 10.0,
        "event_time": 10.0,
        "summary": "two orders",
        "evidence": {},
    }
    doc.update(changes)
    return doc


def test_each_kind_round_trips_through_its_header() -> None:
    messages = [
        Watermark(source_topic="orders", source_partition=3, forwarded_upto=12.5, caught_up=False),
        Watermark(source_topic="orders", source_partition=0, forwarded_upto=None, caught_up=True),
        Adoption(id="adopt:ex-1", event_time=10.0, exception=_record()),
        Tick(),
    ]
    for message in messages:
        headers, value = encode(message)
        assert headers == [(CONTROL_HEADER, f"{message.kind}/1".encode())]
        assert decode_control(headers, value) == message


def test_an_event_without_the_header_is_not_control() -> None:
    event = json.dumps({"specversion": "1.0", "type": "order.created", "id": "x"}).encode()
    assert decode_control(None, event) is None
    assert decode_control([("other", b"x")], event) is None
    # An event whose bytes look like a control message is still an event: only the header says.
    assert decode_control(None, b'{"kind":"watermark","v":1}') is None


@pytest.mark.parametrize(
    ("header", "value", "where"),
    [
        (b"watermark/1", b"{not json", "Watermark"),
        (b"watermark/1", b'{"source_topic":"o","source_partition":-1,"caught_up":true}', "source_partition"),
        (b"watermark/1", b'{"source_topic":"o","source_partition":1,"caught_up":"maybe"}', "caught_up"),
        (b"watermark/1", b'{"source_topic":"o","source_partition":1,"caught_up":true,"x":1}', "x"),
        (b"watermark/2", b"{}", "version"),
        (b"teleport/1", b"{}", "kind"),
        (b"adoption/1", b'{"id":"a","event_time":1,"exception":{"rule":"X"}}', "exception"),
        (
            b"adoption/1",
            json.dumps({"id": "a", "event_time": 1, "exception": _record(rule="SPLIT")}).encode(),
            "exception",
        ),
        (
            b"adoption/1",
            json.dumps({"id": "a", "event_time": 1, "exception": _record(order_id=None)}).encode(),
            "exception",
        ),
        (
            b"watermark/1",
            b'{"source_topic":"o","source_partition":1,"caught_up":true,"forwarded_upto":1e999}',
            "forwarded_upto",
        ),
    ],
)
def test_a_malformed_control_message_raises_invalid_control_naming_what(
    header: bytes, value: bytes, where: str
) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_control([(CONTROL_HEADER, header)], value)
    assert err.value.reason == "invalid_control"
    assert where in str(err.value) or where in ("version", "kind")


def test_a_huge_control_message_is_refused_before_parsing() -> None:
    big = b'{"source_topic":"' + b"o" * 400_000 + b'"}'
    with pytest.raises(InvalidEvent, match="bytes"):
        decode_control([(CONTROL_HEADER, b"watermark/1")], big)
    with pytest.raises(InvalidEvent, match="bytes"):
        decode_control(None, b'{"wm":"' + b"o" * 400_000 + b'"}')


def test_the_legacy_forms_of_worker_version_1_still_read() -> None:
    wm = decode_control(None, b'{"wm":"orders","q":2,"t":99.5,"idle":false}')
    assert wm == Watermark(source_topic="orders", source_partition=2, forwarded_upto=99.5, caught_up=False)
    assert decode_control(None, b'{"wm":"orders","q":0,"t":null,"idle":true}') == Watermark(
        source_topic="orders", source_partition=0, forwarded_upto=None, caught_up=True
    )
    legacy = json.dumps({"id": "adopt:ex-1", "t": 10.0, "data": _record()}, separators=(",", ":")).encode()
    adopted = decode_control(None, legacy)
    assert isinstance(adopted, Adoption) and adopted.exception["order_id"] == "o-1" and adopted.event_time == 10.0
    assert decode_tick(None, b"tick") == Tick()
    with pytest.raises(InvalidEvent, match="legacy Watermark"):
        decode_control(None, b'{"wm":"orders","q":"two","t":1,"idle":false}')
    with pytest.raises(InvalidEvent, match="not JSON"):
        decode_control(None, b'{"wm": nope')


def test_a_ticks_topic_carries_ticks_only() -> None:
    headers, value = encode(Tick())
    assert decode_tick(headers, value) == Tick()
    for headers, value in [
        (None, b"tock"),
        (None, b""),
        encode(Watermark(source_topic="o", source_partition=0, caught_up=True)),
    ]:
        with pytest.raises(InvalidEvent) as err:
            decode_tick(headers, value)
        assert err.value.reason == "invalid_control"
