"""A worker whose broker goes away (a private broker, killed with SIGKILL: the shared one on
127.0.0.1:9092 serves every other test). Stopped cleanly while its table changelog records cannot
reach the broker, it leaves no clean-stop marker: its local files are ahead of the changelogs, and
the next start must discard them (streams.local_tables)."""

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
    """A `--clock event` worker on the published stream, once it has published 20 exception
    events (it is well into processing, and has sent to every topic it sends to: a first send to
    a topic while the broker is gone waits for its metadata, then fails and takes faust's
    producer buffer down with it); killed on the way out if still running."""
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            deadline = time.monotonic() + 240
            while len(await read_json(settings, settings.topic("order-exceptions"))) < 20:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not 20 exception events in 240 s:\n{log_path.read_text()[-3000:]}"
                await asyncio.sleep(0.5)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_a_clean_stop_with_the_broker_gone_leaves_no_clean_stop_marker(
    tmp_path: Path,
    private_broker: PrivateBroker,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With the broker gone, the stop waits in faust's "Flush producer buffer" until aiokafka gives
    # up on the unsent batches: after faust's producer_request_timeout, 20 minutes by default
    # (read from this variable). 10 s here: the same stop, sooner.
    monkeypatch.setenv("PRODUCER_REQUEST_TIMEOUT", "10")
    data = tmp_path / "data"
    settings = _settings(private_broker, data)
    await publish_simulation(tmp_path, settings, orders=600, seed=8)
    log_path = tmp_path / "worker.log"
    async with _worker_mid_replay(settings, log_path) as proc:
        private_broker.kill()
        # The agents go on with what the consumer had fetched: table writes whose changelog
        # records the broker never gets. Long enough for what they publish to expire too: an
        # agent awaiting its emissions crashes then (faust restarts it). A crash just as the
        # stop reaches the agents has faust restart the agent in the middle of the stop, which
        # then never ends: a bug of its own (1 run in 5 with a 5 s wait here, and a hang in 1 of
        # 5 with this one), reported, not this test's subject: an xfail, the log printed.
        await asyncio.sleep(30)
        crashed = proc.poll()
        if crashed is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                print(log_path.read_text()[-5000:])
                pytest.xfail("the stop hung (faust restarted a crashed agent mid-stop): a bug of its own")
    text = log_path.read_text()
    # Lost records or not, a worker that did not stop cleanly never marks its files.
    assert not list(data.rglob(CLEAN_STOP_MARKER)), "marked clean though its changelogs missed writes"
    if crashed is not None or code != 0:
        # Seen: faust's ProducerBuffer dies on UnknownTopicOrPartitionError from aiokafka while
        # the broker is gone, and the worker stops with exit 1. No clean stop to test here.
        print(text[-5000:])
        pytest.xfail(f"the worker crashed by itself in the outage (exit {crashed if crashed is not None else code})")
    # mode's Worker stopped every service and exited 0: a clean stop as far as it knows.
    assert [p for p in data.rglob("*.db") if p.is_dir()], "the worker wrote no local table files"
    said = re.search(
        r"\[WARNING\] local tables: no clean-stop marker: the broker acknowledged (\d+) of (\d+) changelog records",
        text,
    )
    assert said, text[-3000:]
    acknowledged, written = int(said[1]), int(said[2])
    assert 0 < acknowledged < written
