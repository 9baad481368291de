"""The stalled-partition signal on the real broker (issue 9): an orders agent that never gets to
consume (its blocklist topic is mis-provisioned, so the blocklist never loads and the agent waits
for it) leaves its partitions' commits still while messages wait; /health answers 503 naming
them and `orderwatch_partition_stalled` is 1. Nothing else shows it: the lag gauge counts from
what the agents consumed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from orderwatch.streams.settings import Settings
from tests.integration.kafka import publish_simulation
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


async def test_a_stuck_agent_is_reported_stalled(tmp_path: Path, kafka_settings: Settings) -> None:
    blocklist = kafka_settings.topic("blocklist")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([blocklist])
        for _ in range(50):  # deletion is asynchronous on the broker
            if blocklist not in await admin.list_topics():
                break
            await asyncio.sleep(0.2)
        # 1 partition where 4 are read (compacted: the start-up check asks for that much)
        await admin.create_topics([NewTopic(blocklist, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    await publish_simulation(tmp_path, kafka_settings, orders=40, seed=2)
    token = "clock-reader-token-0123456789"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "stall_seconds": 6.0, "viewer_token": SecretStr(token)}
    )
    log_path = tmp_path / "worker.log"
    body, metrics, status, ready, ready_status = "", "", 0, "", 0
    clock_anonymous, clock_status, clock = 0, 0, {}
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "wall", log)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                deadline = time.monotonic() + 150
                while time.monotonic() < deadline:
                    await asyncio.sleep(2)
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    try:
                        async with http.get(f"http://127.0.0.1:{settings.web_port}/health") as resp:
                            status, body = resp.status, await resp.text()
                        async with http.get(f"http://127.0.0.1:{settings.web_port}/metrics") as resp:
                            metrics = await resp.text()
                        async with http.get(f"http://127.0.0.1:{settings.web_port}/ready") as resp:
                            ready_status, ready = resp.status, await resp.text()
                    except aiohttp.ClientError:
                        continue  # not listening yet
                    if status == 503:
                        # /clock, the operators' view of what holds the clock, needs a token.
                        base = f"http://127.0.0.1:{settings.web_port}/clock"
                        async with http.get(base) as resp:
                            clock_anonymous = resp.status
                        async with http.get(base, headers={"Authorization": f"Bearer {token}"}) as resp:
                            clock_status, clock = resp.status, await resp.json()
                        break
        finally:
            stop_worker(proc)
    assert status == 503, (status, body, log_path.read_text()[-2000:])
    assert "stalled" in body and kafka_settings.topic("orders") in body
    assert clock_anonymous == 401 and clock_status == 200 and "orders" in clock["agents"]
    # A detection-only worker answers /ready itself, and says why it is not.
    assert ready_status == 503 and "blocklist: not loaded yet" in ready
    stalled = [
        line
        for line in metrics.splitlines()
        if line.startswith("orderwatch_partition_stalled{") and line.endswith(" 1.0")
    ]
    assert any(kafka_settings.topic("orders") in line for line in stalled), metrics[-3000:]
