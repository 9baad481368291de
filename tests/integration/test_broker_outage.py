"""A worker whose broker goes away (a private broker, killed with SIGKILL: the shared one on
127.0.0.1:9092 serves every other test). It keeps running through the outage, and a broker that
comes back finds it going on to `backtest`'s outcome. Stopped while the broker is gone, it stops
in bounded time and leaves no clean-stop marker unless the broker acknowledged every changelog
record it wrote: else its local files are ahead of the changelogs, and the next start must
discard them (streams.local_tables)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orderwatch.detectors.records import to_cloudevent
from orderwatch.streams.consumer_port import NamedTopicsApp
from orderwatch.streams.local_tables import CLEAN_STOP_MARKER
from orderwatch.streams.settings import Settings
from orderwatch.streams.worker import STOP_OVERRAN
from tests.integration.kafka import publish_simulation, read_json, wait_for_outcome
from tests.support.broker import PrivateBroker, private_broker  # noqa: F401  (the fixture)
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


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
async def _worker_mid_replay(
    settings: Settings, log_path: Path, *, events: int
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A `--clock event` worker on the published stream, once it has published `events`
    exception events; killed on the way out if still running."""
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            deadline = time.monotonic() + 240
            while len(await read_json(settings, settings.topic("order-exceptions"))) < events:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                late = f"not {events} exception events in 240 s:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, late
                await asyncio.sleep(0.5)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _health(port: int) -> tuple[int, dict[str, object]]:
    """/health's status code and body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_a_topic_faust_declared_takes_its_first_send_with_the_broker_gone(
    private_broker: PrivateBroker,  # noqa: F811
) -> None:
    """The worker's producer learns the partitions of each topic faust declares (a table's
    changelog) at start-up: a first send to it while the broker is gone is queued for the broker
    like any other. aiokafka asked for the metadata at the first send, and with the broker gone
    gave up after the request timeout (UnknownTopicOrPartitionError): faust's ProducerBuffer died
    on it, and the worker with it."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    app = NamedTopicsApp(
        f"{prefix}app",
        producer_topics=[f"{prefix}orders"],
        broker=f"kafka://{private_broker.bootstrap}",
        store="memory://",
        producer_request_timeout=5,
    )
    producer = app.producer
    await producer.start()
    try:
        await producer.create_topic(f"{prefix}orders", 4, 1)
        await producer.create_topic(f"{prefix}state-changelog", 4, 1)
        private_broker.kill()
        sent = await producer.send(f"{prefix}state-changelog", b"k", b"v", None, None, None)
        assert isinstance(sent, asyncio.Future)
        assert not sent.done()  # queued for the broker, as a send to a topic sent to before
    finally:
        await producer.stop()  # gives up on the record after the request timeout


async def test_a_broker_gone_early_and_back_costs_nothing_and_doubles_nothing(
    tmp_path: Path,
    private_broker: PrivateBroker,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An outage longer than faust's producer_request_timeout (20 minutes by default, read from
    # this variable): what aiokafka holds for the broker expires, and a first send to a topic
    # gives up waiting for its metadata. 10 s here: the same outage, sooner.
    monkeypatch.setenv("PRODUCER_REQUEST_TIMEOUT", "10")
    settings = _settings(private_broker, tmp_path / "data").model_copy(update={"stall_seconds": 10.0})
    _path, res = await publish_simulation(tmp_path, settings, orders=600, seed=8)
    expected = {(em.record.exception_id, "resolved" if em.kind == "resolved" else "opened") for em in res.emissions}
    expected_ids = {to_cloudevent(em)["id"] for em in res.emissions}
    topic = settings.topic("order-exceptions")
    log_path = tmp_path / "worker.log"
    # Killed after the first exception event: the worker has yet to send to some of the topics it
    # writes (a table's changelog is first written when the table first changes).
    async with _worker_mid_replay(settings, log_path, events=1) as proc:
        private_broker.kill()
        # Longer than the group's session (10 s): the member the broker knew is gone by the time
        # it is back.
        for _ in range(30):
            await asyncio.sleep(1)
            assert proc.poll() is None, log_path.read_text()[-5000:]
        # It says so: its input partitions stopped committing while messages wait.
        status, body = await asyncio.to_thread(_health, settings.web_port)
        assert status == 503, body
        assert any("stalled" in p for p in body["problems"]), body  # type: ignore[attr-defined]
        private_broker.start()  # the same data, the same port
        got, _dlq = await wait_for_outcome(settings, proc, log_path, expected, settle=4)
        events = await read_json(settings, topic)
        stop_worker(proc, timeout=180)
    assert got - expected == set(), f"opened or resolved by mistake: {sorted(got - expected)[:10]}"
    assert expected - got == set(), f"lost: {sorted(expected - got)[:10]}"
    # Sent again after the outage, maybe (at least once), always with the same event id.
    assert set(Counter(e["id"] for e in events)) == expected_ids


STOP_SECONDS = 30.0
"""The stop deadline the stopping tests give the worker (ORDERWATCH_STOP_SECONDS)."""


@pytest.mark.parametrize("events", [1, 20])
async def test_a_stop_with_the_broker_gone_ends_in_bounded_time_and_leaves_no_clean_stop_marker(
    tmp_path: Path,
    private_broker: PrivateBroker,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    events: int,
) -> None:
    # With the broker gone, the stop waits in faust's "Flush producer buffer" until aiokafka gives
    # up on the unsent batches: after faust's producer_request_timeout, 20 minutes by default
    # (read from this variable). 10 s here: the same stop, sooner. A commit faust began while the
    # broker was gone never ends (aiokafka waits for a group coordinator), and the stop waits for
    # it: the worker's stop deadline ends that one.
    monkeypatch.setenv("PRODUCER_REQUEST_TIMEOUT", "10")
    data = tmp_path / "data"
    settings = _settings(private_broker, data).model_copy(update={"stop_seconds": STOP_SECONDS})
    await publish_simulation(tmp_path, settings, orders=600, seed=8)
    log_path = tmp_path / "worker.log"
    # After 1 exception event the worker has not sent to every topic it writes yet; after 20 it
    # has, and is well into processing.
    async with _worker_mid_replay(settings, log_path, events=events) as proc:
        private_broker.kill()
        # The agents go on with what the consumer had fetched: table writes whose changelog
        # records the broker never gets. Long enough for what they publish to expire too.
        for _ in range(30):
            await asyncio.sleep(1)
            assert proc.poll() is None, log_path.read_text()[-5000:]
        proc.send_signal(signal.SIGTERM)
        try:
            # The deadline, and time for a loaded machine to schedule the exit.
            code = proc.wait(timeout=STOP_SECONDS + 90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the stop outlasted its deadline:\n{log_path.read_text()[-5000:]}")
    text = log_path.read_text()
    marked = bool(list(data.rglob(CLEAN_STOP_MARKER)))
    assert [p for p in data.rglob("*.db") if p.is_dir()], "the worker wrote no local table files"
    if code == STOP_OVERRAN:
        # Ended by the deadline, saying what became of the changelog records; never marked.
        said = re.search(
            r"\[ERROR\] the stop did not end within \d+ s: the broker acknowledged (\d+) of (\d+) changelog records",
            text,
        )
        assert not marked, "a stop ended by its deadline marked the files"
    else:
        # mode's Worker stopped every service and exited 0: a clean stop as far as it knows.
        assert code == 0, text[-5000:]
        said = re.search(
            r"\[(?:WARNING|INFO)\] local tables: (?:no clean-stop marker|clean-stop marker written):"
            r" the broker acknowledged (\d+) of (\d+) changelog records",
            text,
        )
    assert said, text[-3000:]
    acknowledged, written = int(said[1]), int(said[2])
    assert 0 < acknowledged <= written
    # Marked only if the changelogs have every write the files have. The agents hold their work
    # while what they send waits for the broker, so an outage need not cost a changelog record.
    assert not marked or acknowledged == written, "marked clean though its changelogs missed writes"
