"""Run a real `orderwatch worker` as a child process, as the integration tests, the console's
browser tests and the benchmarks do."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

from orderwatch.streams.settings import Settings
from orderwatch.streams.worker import worker_env

__all__ = ["free_port", "metric_total", "spawn_worker", "stop_worker"]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for a worker's web port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_worker(
    settings: Settings, clock: str, log: IO[bytes] | Any, *, handlers: bool = False, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`orderwatch worker --clock CLOCK [ARGS]` as a child process configured by `settings`.

    Detection only (`--no-handlers`) unless `handlers`: then the handlers run too, with the
    settings' Redis URL and prefix, API token, handlers config file and dry run."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orderwatch.cli",
            "worker",
            "--clock",
            clock,
            *([] if handlers else ["--no-handlers"]),
            *args,
        ],
        env=worker_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGINT (faust shuts down cleanly), then SIGKILL if it has not exited within `timeout`."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def metric_total(port: int, name: str) -> float:
    """The sum of every series of one metric on a worker's /metrics (0 when it has none)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((f"{name}{{", f"{name} "))
    )
