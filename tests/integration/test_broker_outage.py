"""A worker whose broker goes away (a private broker, killed with SIGKILL: the shared one on
127.0.0.1:9092 serves every other test). Table changelog records that never reached the broker
leave the local RocksDB files ahead of the changelogs: a clean stop after them leaves no
clean-stop marker, and the next start discards the files (streams.local_tables)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orderwatch.streams.local_tables import CLEAN_STOP_MARKER
from orderwatch.streams.settings import Settings
from tests.integration.kafka import publish_simulation, read_json
from tests.support.broker import PrivateBroker, private_broker  # noqa: F401  (the fixture)
from tests.support.worker import free_port, spawn_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def _settings(broker: PrivateBroker, data_dir: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=prefix,
        partitions=4,
        app_id=f"orderwatch-{prefix[:-1]}",
        store="rocksdb://",
        data_dir=str(data_dir),
        web_port=free_port(),
    )


@contextlib.asynccontextmanager
async def _worker_mid_replay(settings: Settings, log_path: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A `--clock event` worker on the published stream, once it has published an exception
    event (it is processing); killed on the way out if still running."""
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            deadline = time.monotonic() + 240
            while not await read_json(settings, settings.topic("order-exceptions")):
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no exception event in 240 s:\n{log_path.read_text()[-3000:]}"
                await asyncio.sleep(0.5)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_changelog_records_lost_to_an_outage_leave_no_clean_stop_marker(
    tmp_path: Path,
    private_broker: PrivateBroker,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiokafka gives up on a batch it could not deliver within faust's producer_request_timeout
    # (20 minutes by default, read from this variable): 10 s here, the same loss, sooner.
    monkeypatch.setenv("PRODUCER_REQUEST_TIMEOUT", "10")
    data = tmp_path / "data"
    settings = _settings(private_broker, data)
    await publish_simulation(tmp_path, settings, orders=600, seed=8)
    log_path = tmp_path / "worker.log"
    async with _worker_mid_replay(settings, log_path) as proc:
        private_broker.kill()
        # The agents go on with what the consumer had fetched: table writes whose changelog
        # records expire unsent.
        await asyncio.sleep(30)
        # Stopped with the broker still gone, the worker's stop could hang: an agent whose own
        # sends expire at the moment the stop reaches it crashes, and faust restarts it in the
        # middle of the stop (seen in 2 runs of 6; a bug of its own). With the broker back the
        # stop is an ordinary one, and the records lost stay lost.
        private_broker.start()
        await asyncio.sleep(10)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not stop within 300 s of SIGTERM:\n{log_path.read_text()[-5000:]}")
    text = log_path.read_text()
    # mode's Worker stopped every service and exited 0: a clean stop as far as it knows.
    assert code == 0, text[-3000:]
    assert [p for p in data.rglob("*.db") if p.is_dir()], "the worker wrote no local table files"
    assert not list(data.rglob(CLEAN_STOP_MARKER)), "marked clean though its changelogs missed writes"
    said = re.search(
        r"\[WARNING\] local tables: no clean-stop marker: the broker acknowledged (\d+) of (\d+) changelog"
        r" records \((\d+) failed",
        text,
    )
    assert said, text[-3000:]
    acknowledged, written, failed = int(said[1]), int(said[2]), int(said[3])
    assert failed > 0
    assert 0 < acknowledged < written
