"""Crash recovery on the real broker: a worker killed with SIGKILL mid-replay and started again
loses no exception and opens none twice, its state coming back from the table changelogs (the
in-memory store) or from the local RocksDB files and the changelogs (the rocksdb:// store)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from orderwatch.detectors.records import to_cloudevent
from orderwatch.streams.local_tables import CLEAN_STOP_MARKER
from orderwatch.streams.settings import Settings
from tests.integration.kafka import publish_simulation, read_json
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


def _keys(events: list[dict[str, object]]) -> set[tuple[str, str]]:
    return {(e["data"]["exception_id"], str(e["type"]).split(".")[1]) for e in events}  # type: ignore[index]


async def _wait_for(settings: Settings, topic: str, enough: int, timeout: float) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    got: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        got = await read_json(settings, topic)
        if len(got) >= enough:
            break
        await asyncio.sleep(0.2)
    return got


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_kill_9_mid_stream_then_restart_loses_nothing_and_doubles_nothing(
    tmp_path: Path, kafka_settings: Settings, store: str
) -> None:
    _path, res = await publish_simulation(tmp_path, kafka_settings, orders=600, seed=8)
    expected = {(em.record.exception_id, "resolved" if em.kind == "resolved" else "opened") for em in res.emissions}
    expected_ids = {to_cloudevent(em)["id"] for em in res.emissions}
    topic = kafka_settings.topic("order-exceptions")
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "store": store, "data_dir": str(tmp_path / "data")}
    )

    first_log = tmp_path / "worker-1.log"
    with first_log.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            before = await _wait_for(settings, topic, 1, 120)
        finally:
            proc.kill()  # SIGKILL: no shutdown, no last commit, nothing flushed on the way out
            proc.wait()
    assert before, first_log.read_text()[-3000:]
    # What the worker did before faust took over its logging is in its log too (a fresh group:
    # every partition got a start offset).
    assert re.search(rb"\[INFO\] pinned start offsets of \d+ partitions without a commit", first_log.read_bytes())
    before = await read_json(settings, topic)
    assert len(_keys(before)) < len(expected) // 2, "killed too late to test anything"

    second_log = tmp_path / "worker-2.log"
    with second_log.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            deadline = time.monotonic() + 240
            got: set[tuple[str, str]] = set()
            while time.monotonic() < deadline and not got >= expected:
                await asyncio.sleep(2)
                assert proc.poll() is None, second_log.read_text()[-3000:]
                got = _keys(await read_json(settings, topic))
            await asyncio.sleep(4)  # anything extra would show up now
            events = await read_json(settings, topic)
        finally:
            stop_worker(proc)
    got = _keys(events)
    assert got - expected == set(), f"opened or resolved by mistake: {sorted(got - expected)[:10]}"
    assert expected - got == set(), f"lost: {sorted(expected - got)[:10]}"
    # A crash may publish an emission again (at least once), always with the same exception id
    # and event id: the compacted topic and every consumer dedupe on them. Never a second id.
    ids = Counter(e["id"] for e in events)
    assert set(ids) == expected_ids
    # The restarted worker rebuilt its state (from the changelog, or RocksDB's files plus the
    # changelog past what they hold), not from scratch.
    restored = [int(n) for n in re.findall(rb"partition \d+ ready, (\d+) keys restored", second_log.read_bytes())]
    assert sum(restored) > 0, second_log.read_text()[-3000:]
    if store == "rocksdb://":
        # The kill left local RocksDB files that may be ahead of their changelogs (writes never
        # sent): discarded, not trusted (streams.local_tables). The clean stop just now marked
        # them good for the next start.
        assert re.search(rb"local tables: discarded \d+ local table files", second_log.read_bytes())
        assert list((tmp_path / "data").rglob(CLEAN_STOP_MARKER)), "a clean stop leaves its marker"
