"""The forward header: what a forwarded message says of where it came from."""

from __future__ import annotations

from orderwatch.streams.forwarding import SOURCE_HEADER, upstream_of, upstream_partition


def test_a_forward_names_its_upstream_partition_and_offset() -> None:
    source = upstream_of([(SOURCE_HEADER, b"app-orders:7:4")])
    assert source == ("app-orders:7", 4)
    assert upstream_partition(source[0]) == ("app-orders", 7)


def test_a_malformed_upstream_key_names_no_partition() -> None:
    for key in ("app-orders", "app-orders:", ":7", "app-orders:x", "app-orders:-1", ""):
        assert upstream_partition(key) is None, key
    assert upstream_of([(SOURCE_HEADER, b"app-orders:7:x")]) is None
    assert upstream_of([("other", b"app-orders:7:4")]) is None
