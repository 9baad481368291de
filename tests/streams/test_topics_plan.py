"""The topic plan and its diagnosis, without a broker: what `orderwatch topics check` reports."""

from __future__ import annotations

from orderwatch.streams.app import create_app, internal_topics, producer_topics
from orderwatch.streams.consumer_port import NamedTopicsApp, NamedTopicsProducer
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import Found, changelog_topics, diagnose, format_problems, topic_plan

S = Settings(topic_prefix="p-", app_id="ow-x", partitions=4)


def _healthy() -> dict[str, Found]:
    return {s.name: Found(s.name, s.create_partitions, s.compacted, 0) for s in topic_plan(S)}


def test_the_plan_names_every_topic_the_worker_uses_with_the_prefix_and_app_id() -> None:
    names = {s.name for s in topic_plan(S)}
    for t in ("orders", "payments", "inventory", "logistics", "orders-dlq", "order-exceptions", "blocklist"):
        assert f"p-{t}" in names
    assert set(internal_topics(S)) <= names
    assert set(changelog_topics(S)) <= names
    compacted = {s.name for s in topic_plan(S) if s.compacted}
    assert {"p-order-exceptions", "p-blocklist"} <= compacted


def test_the_changelog_names_are_those_faust_derives_from_the_tables() -> None:
    ow = create_app(S)
    assert {t.changelog_topic.get_topic_name() for t in ow.app.tables.values()} == set(changelog_topics(S))


def test_the_worker_producer_names_topics_the_plan_creates_and_no_changelog() -> None:
    """The producer's metadata requests name these from its start (streams.consumer_port): each
    must exist by then (`topics create` and the worker's start-up check make every required
    topic), else every refresh logs it as not found; the changelogs faust may create later are
    left out, the input topics are in (faust's router asks the producer for their partitions)."""
    ow = create_app(S)
    assert isinstance(ow.app, NamedTopicsApp)
    assert isinstance(ow.app.producer, NamedTopicsProducer)
    topics = set(ow.app.producer.topics)
    assert topics == set(producer_topics(S))
    assert {"p-orders", "p-payments", "p-inventory", "p-logistics", "p-order-exceptions", "p-orders-dlq"} <= topics
    assert set(internal_topics(S)) <= topics
    assert topics <= {s.name for s in topic_plan(S) if s.required}
    assert not topics & set(changelog_topics(S))


def test_co_partitioned_topics_need_the_configured_count_the_others_any() -> None:
    exact = {s.name for s in topic_plan(S) if s.partitions == 4}
    assert {"p-orders", "p-payments", "p-logistics", "ow-x-order-inbox", "ow-x-ticks-orders"} <= exact
    anycount = {s.name for s in topic_plan(S) if s.partitions is None}
    assert anycount == {"p-orders-dlq", "p-order-exceptions", "p-blocklist", "p-order-actions"}


def test_a_healthy_broker_has_no_problem_and_missing_changelogs_are_fine() -> None:
    found = _healthy()
    for name in changelog_topics(S):
        del found[name]
    found["p-blocklist"] = Found("p-blocklist", 12, True, 0)  # any count
    assert diagnose(topic_plan(S), found, S) == []


def test_under_partitioned_missing_and_uncompacted_topics_are_each_reported_with_a_fix() -> None:
    found = _healthy()
    found["p-orders"] = Found("p-orders", 1, False, 0)
    found["ow-x-orders-state-changelog"] = Found("ow-x-orders-state-changelog", 8, True, 0)
    found["p-blocklist"] = Found("p-blocklist", 4, False, 0)
    del found["p-payments"]
    problems = {(p.topic, p.kind): p for p in diagnose(topic_plan(S), found, S)}
    assert set(problems) == {
        ("p-orders", "partitions"),
        ("ow-x-orders-state-changelog", "partitions"),
        ("p-blocklist", "compaction"),
        ("p-payments", "missing"),
    }
    orders = problems[("p-orders", "partitions")]
    assert (orders.found, orders.expected) == ("1 partition", "4 partitions (ORDERWATCH_PARTITIONS)")
    assert "--delete --topic p-orders" in orders.fix and "orderwatch topics create" in orders.fix
    assert problems[("p-payments", "missing")].fix == "orderwatch topics create"
    assert "cleanup.policy=compact" in problems[("p-blocklist", "compaction")].fix
    table = format_problems(list(problems.values()))
    assert table.splitlines()[0].split() == ["topic", "found", "expected", "fix"]
    assert "moves keys to other partitions" in table


def test_the_explanation_of_counts_only_comes_with_a_count_problem() -> None:
    found = _healthy()
    del found["p-orders"]
    table = format_problems(diagnose(topic_plan(S), found, S))
    assert "p-orders" in table and "moves keys" not in table
