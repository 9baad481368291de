"""`orderwatch topics check|create`, the worker's start-up check and publish's refusal to create
topics, against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import check_topics, topic_plan
from orderwatch.streams.worker import worker_env
from tests.integration.conftest import BOOTSTRAP
from tests.support.worker import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def bare_settings() -> AsyncIterator[Settings]:
    """Settings with a fresh prefix and app id under which no topic exists yet; whatever the
    test creates under them is deleted at the end."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    settings = Settings(
        kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix, app_id=f"orderwatch-{prefix[:-1]}", partitions=4
    )
    yield settings
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith((prefix, settings.app_id + "-"))]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def _create(names_partitions: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, p, 1) for n, p in names_partitions.items()])
    finally:
        await admin.close()


async def _topics(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith((settings.topic_prefix, settings.app_id + "-"))]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(mine)} if mine else {}
    finally:
        await admin.close()


def _cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**worker_env(settings), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "orderwatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=os.getcwd(),
    )


async def test_worker_on_under_partitioned_topics_stops_at_once_and_check_explains_the_same(
    bare_settings: Settings, tmp_path: Path
) -> None:
    s = bare_settings.model_copy(update={"web_port": free_port(), "data_dir": str(tmp_path / "data")})
    # What an auto-creating broker left behind: the order topics with one partition.
    await _create({s.topic("orders"): 1, s.topic("payments"): 1})

    worker = _cli(s, "worker", "--no-handlers", "--clock", "event", timeout=90)
    out = worker.stdout + worker.stderr
    assert worker.returncode == 2, out
    assert "Traceback" not in out and "KafkaTimeoutError" not in out
    for topic in (s.topic("orders"), s.topic("payments")):
        line = next(x for x in out.splitlines() if x.strip().startswith(topic + " "))
        assert "1 partition" in line and "4 partitions" in line
        assert f"--delete --topic {topic}; orderwatch topics create" in line
    assert "moves keys to other partitions" in out
    assert (await _topics(s))[s.topic("orders")] == 1  # untouched

    check = _cli(s, "topics", "check")
    assert check.returncode == 1, check.stdout + check.stderr
    rows = {x.split()[0]: x for x in check.stdout.splitlines()[2:] if x.startswith("  ")}
    assert "1 partition" in rows[s.topic("orders")] and "4 partitions" in rows[s.topic("orders")]
    assert "1 partition" in rows[s.topic("payments")]
    # The worker created what was missing before it refused; check finds the same two problems.
    assert {p.topic for p in await check_topics(s)} == {s.topic("orders"), s.topic("payments")}


async def test_create_is_idempotent_and_refuses_to_change_a_partition_count(bare_settings: Settings) -> None:
    s = bare_settings
    before = _cli(s, "topics", "check")
    assert before.returncode == 1
    assert f"{s.topic('orders')} " in before.stdout and "missing" in before.stdout

    first = _cli(s, "topics", "create", "--replication-factor", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    required = {t.name for t in topic_plan(s) if t.required}
    assert {x.removeprefix("created ") for x in first.stdout.splitlines() if x.startswith("created ")} == required
    have = await _topics(s)
    assert all(have[t] == 4 for t in required)

    again = _cli(s, "topics", "create")
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout
    assert _cli(s, "topics", "check").returncode == 0
    assert await check_topics(s) == []

    # A prefix whose order topic was made with 2 partitions: create makes the rest, not that one.
    other = s.model_copy(update={"topic_prefix": s.topic_prefix + "b-", "app_id": s.app_id + "-b"})
    await _create({other.topic("orders"): 2})
    res = _cli(other, "topics", "create", "--replication-factor", "1")
    assert res.returncode == 1
    assert "2 partitions" in res.stdout and "creates missing topics only" in res.stdout
    have = await _topics(other)
    assert have[other.topic("orders")] == 2
    assert have[other.topic("payments")] == 4
    assert [p.topic for p in await check_topics(other)] == [other.topic("orders")]


async def test_publish_creates_no_topic_and_says_what_to_run(bare_settings: Settings, tmp_path: Path) -> None:
    s = bare_settings
    path = tmp_path / "one.jsonl"
    path.write_text(
        '{"specversion":"1.0","id":"e1","source":"shop","type":"order.created","subject":"o1",'
        '"time":"2026-03-02T08:00:00Z","data":{"order_id":"o1"}}\n'
    )
    res = _cli(s, "publish", str(path))
    assert res.returncode == 2
    assert "publish creates no topics" in res.stderr
    assert f"{s.topic('orders')} " in res.stderr and "orderwatch topics create" in res.stderr
    assert "Traceback" not in res.stderr
    assert await _topics(s) == {}
    # An unroutable topic that does not exist is refused the same way.
    assert _cli(s, "topics", "create", "--replication-factor", "1").returncode == 0
    res = _cli(s, "publish", str(path), "--unroutable-topic", s.topic("nowhere"))
    assert res.returncode == 2 and f"--create --topic {s.topic('nowhere')}" in res.stderr
    assert s.topic("nowhere") not in await _topics(s)
    ok = _cli(s, "publish", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "published 1 events" in ok.stdout
