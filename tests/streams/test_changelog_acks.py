"""ChangelogAcks: table writes against the broker's answers to their changelog records, only the
tables' changelog topics counted. faust calls these hooks (faust/tables/table.py, faust/topics.py);
that it does, with these arguments, is what test_recovery and test_broker_outage show on a real
broker (a clean stop marks the files, a stop with the broker gone does not)."""

from __future__ import annotations

from typing import Any

from orderwatch.streams.changelog_acks import ChangelogAcks, ChangelogTally

CHANGELOG = "orderwatch-orders-state-changelog"


def _send(acks: ChangelogAcks, topic: str) -> Any:
    return acks.on_send_initiated(None, topic, None, 3, 10)


def test_a_write_is_complete_once_the_broker_acknowledged_its_changelog_record() -> None:
    acks = ChangelogAcks([CHANGELOG])
    acks.on_table_set(None, b"k", b"v")
    acks.on_table_del(None, b"j")
    assert acks.tally() == ChangelogTally(written=2, acknowledged=0, failed=0)
    assert not acks.tally().complete
    first, second = _send(acks, CHANGELOG), _send(acks, CHANGELOG)
    acks.on_send_completed(None, first, None)
    assert not acks.tally().complete  # one record still unanswered
    acks.on_send_completed(None, second, None)
    assert acks.tally() == ChangelogTally(written=2, acknowledged=2, failed=0)
    assert acks.tally().complete


def test_a_failed_changelog_record_is_never_complete() -> None:
    acks = ChangelogAcks([CHANGELOG])
    for _ in range(2):
        acks.on_table_set(None, b"k", b"v")
    acks.on_send_error(None, TimeoutError("batch expired"), _send(acks, CHANGELOG))
    acks.on_send_completed(None, _send(acks, CHANGELOG), None)
    assert acks.tally() == ChangelogTally(written=2, acknowledged=1, failed=1)
    assert not acks.tally().complete


def test_a_write_whose_record_was_never_sent_is_not_complete() -> None:
    # Still in faust's producer buffer at the stop: no send hook ever ran for it.
    acks = ChangelogAcks([CHANGELOG])
    acks.on_table_set(None, b"k", b"v")
    assert not acks.tally().complete


def test_sends_to_other_topics_count_for_nothing() -> None:
    acks = ChangelogAcks([CHANGELOG])
    acks.on_table_set(None, b"k", b"v")
    acks.on_send_completed(None, _send(acks, CHANGELOG), None)
    for topic in ("order-exceptions", "orderwatch-ticks-orders", CHANGELOG + "-x"):
        acks.on_send_completed(None, _send(acks, topic), None)
        acks.on_send_error(None, OSError("gone"), _send(acks, topic))
    assert acks.tally() == ChangelogTally(written=1, acknowledged=1, failed=0)
    assert acks.tally().complete


def test_nothing_written_is_complete() -> None:
    assert ChangelogAcks([CHANGELOG]).tally().complete
