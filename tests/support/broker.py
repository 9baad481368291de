"""A Kafka broker of one test's own, for tests whose broker must go away: the shared one on
127.0.0.1:9092 serves every other test and is never stopped.

Started by the project's own `deploy/local/stack.sh kafka` (the same configuration, storage
format and readiness check as `make stack-up`, and the jars it downloaded) in a directory of the
test's and on free ports. `kill()` takes it away as a crash would (SIGKILL, no controlled
shutdown); `start()` again brings it back on the same data and ports."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.worker import free_port

__all__ = ["PrivateBroker", "private_broker"]

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.sh"
# Generous: a JVM start on a loaded 2-core machine, and on a fresh clone Maven's download of the
# jars when `make stack-up` did not run first.
START_TIMEOUT = 600.0


class PrivateBroker:
    """One single-node KRaft broker under `home` (data, config, log, pid file)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """The broker's own log (stack.sh keeps the previous start's as broker.log.1)."""
        return self.home / "kafka" / "broker.log"

    @property
    def _config(self) -> Path:
        return self.home / "kafka" / "config" / "server.properties"

    def start(self) -> None:
        """Start it (again, on the same data) and return once it answers metadata requests."""
        env = {
            **os.environ,
            "ORDERWATCH_LOCAL_DIR": str(self.home),
            "ORDERWATCH_KAFKA_PORT": str(self.port),
            "ORDERWATCH_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            # Small: it holds one test's topics, and the machine runs other engineers' tests.
            "ORDERWATCH_KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m",
            "ORDERWATCH_KAFKA_TIMEOUT": "240",
        }
        done = subprocess.run(
            ["bash", str(STACK), "kafka"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"stack.sh kafka failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def pid(self) -> int | None:
        """The broker's pid while it runs: the pid file's, if that process is this broker."""
        try:
            pid = int((self.home / "kafka" / "kafka.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # A pid file outlives its process, and the pid may be reused: only this broker's java.
        return pid if str(self._config).encode() in cmdline else None

    def kill(self) -> None:
        """SIGKILL, as a crashed or lost broker: nothing flushed, no client told. Returns once
        the process is gone."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        # Not our child (stack.sh started it in the background and exited): poll, not wait.
        deadline = time.monotonic() + 60
        while self.pid() == pid and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A started private broker, killed after the test (its data goes with `tmp_path`)."""
    broker = PrivateBroker(tmp_path / "broker")
    try:
        broker.start()  # inside: a start cut short (timeout, Ctrl-C) may have launched the java
        yield broker
    finally:
        broker.kill()
