"""deploy/docker-compose.yml without Docker: the whole system is there (stack, detector, handlers,
Prometheus with the rules, Grafana with the dashboards), every file it mounts or builds from
exists, and promtool accepts the Prometheus config it mounts (rules included)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.prometheus import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_the_whole_system_is_composed() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "kafka-topics", "detector", "handlers", "prometheus", "grafana"} <= set(services)
    detector, handlers = services["detector"], services["handlers"]
    assert detector["command"] == ["worker", "--no-handlers"]
    assert handlers["command"] == ["worker", "--handlers-only"]
    for svc in (detector, handlers):
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["read_only"] is True
        assert svc["environment"]["ORDERWATCH_KAFKA_BOOTSTRAP"] == "kafka:29092"
        assert svc["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
    assert handlers["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_mounted_file_exists() -> None:
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)


def test_prometheus_config_scrapes_both_workers_with_the_rules() -> None:
    config_path = DEPLOY / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"detector:6066", "handlers:6066"}
    assert all("orderwatch" in job["job_name"] for job in config["scrape_configs"])  # OrderwatchWorkerDown
    out = subprocess.run(
        [require_binary("promtool"), "check", "config", str(config_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "19 rules found" in out.stdout
