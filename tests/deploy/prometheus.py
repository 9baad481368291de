"""A real Prometheus server for the tests: Debian's `prometheus` binary (deploy/tools.sh installs
it) on a free loopback port with a temporary data directory, and a small client of its HTTP API."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.worker import free_port

__all__ = ["PrometheusServer", "require_binary"]


def require_binary(name: str) -> str:
    """The path of `name`, or fail under CI (the project's scripts install it) / skip locally."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found: `make deploy-tools` installs it (Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class PrometheusServer:
    """One prometheus process scraping `targets` every second, evaluating `rule_file`."""

    def __init__(self, workdir: Path, targets: list[str], rule_file: Path, *, job: str = "orderwatch") -> None:
        self.binary = require_binary("prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                async with session.get(f"{self.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await _sleep(0.5)
        raise AssertionError(f"prometheus not ready after {timeout} s:\n{self.log_tail()}")

    async def api(self, session: aiohttp.ClientSession, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>: the `data` of a success, else an AssertionError with the error."""
        async with session.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        data = await self.api(session, "query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
