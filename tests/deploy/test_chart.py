"""The Helm chart rendered with `helm template` for the main value combinations, its objects
checked: the store picks a Deployment or a StatefulSet with a volume per pod, replicas never above
the partitions (the chart refuses), probes on the web port, non-root and read-only, secrets only
by reference, the dashboards and rules the same as deploy/grafana and deploy/prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "orderwatch"
WEB_PORT = 6066


def _helm() -> str:
    candidates = [os.environ.get("HELM"), shutil.which("helm")]
    gopath = (
        subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip()
        if shutil.which("go")
        else ""
    )
    if gopath:
        candidates.append(str(Path(gopath) / "bin" / "helm"))
    for c in candidates:
        if c and Path(c).is_file():
            return c
    msg = "helm not found: `make deploy-tools` builds it with go install"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def render(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run([_helm(), "template", "ow", str(CHART), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render_error(*args: str) -> str:
    out = subprocess.run([_helm(), "template", "ow", str(CHART), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, "rendered, but should have refused"
    return out.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workload(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (w,) = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return w


ALL_ON = ["-f", str(CHART / "ci" / "rocksdb-values.yaml")]
COMBINATIONS = {
    "defaults": [],
    "rocksdb-operator-secrets": ALL_ON,
    "no-handlers": ["--set", "handlers.enabled=false"],
    "one-partition": ["--set", "kafka.partitions=1", "--set", "detector.replicas=1"],
    "inline-configs": [
        "--set-string",
        "handlers.config=[incidents]\nthreshold = 4\n",
        "--set-string",
        "detector.rulesConfig=[rules.PAYMENT_TIMEOUT]\nenabled = true\n",
    ],
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_every_combination_renders_sound_objects(name: str) -> None:
    docs = render(*COMBINATIONS[name])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    partitions = values["kafka"]["partitions"]
    for arg in COMBINATIONS[name]:
        if arg.startswith("kafka.partitions="):
            partitions = int(arg.split("=")[1])
    if name == "rocksdb-operator-secrets":
        partitions = yaml.safe_load((CHART / "ci" / "rocksdb-values.yaml").read_text())["kafka"]["partitions"]

    detector = workload(docs, "detector")
    assert 1 <= detector["spec"]["replicas"] <= partitions
    handlers = [d for d in docs if d["metadata"]["name"].endswith("-handlers") and d["kind"] == "Deployment"]
    assert all(1 <= h["spec"]["replicas"] <= partitions for h in handlers)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["ports"] == [{"name": "web", "containerPort": WEB_PORT, "protocol": "TCP"}]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert c[probe]["httpGet"]["port"] in ("web", WEB_PORT), (w["metadata"]["name"], probe)
            env = {e["name"]: e for e in c["env"]}
            assert env["ORDERWATCH_WEB_PORT"]["value"] == str(WEB_PORT)
            # probes and scrapes come from outside the pod: not loopback
            assert env["ORDERWATCH_WEB_BIND"]["value"] == "0.0.0.0"
            assert env["ORDERWATCH_WEB_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
            assert env["ORDERWATCH_PARTITIONS"]["value"] == str(partitions)
            resources = c["resources"]
            assert resources["requests"]["cpu"] and resources["limits"]["memory"]
            # the writable places: data and /tmp, both volumes (the root filesystem is read-only)
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/var/lib/orderwatch", "/tmp"} <= mounts
    # services select the pods and expose the web port
    for svc in by_kind(docs, "Service"):
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        target = workload(docs, component)
        assert svc["spec"]["selector"] == target["spec"]["selector"]["matchLabels"]
        assert svc["spec"]["ports"][0]["targetPort"] == "web"
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
        assert pdb["spec"]["selector"]["matchLabels"] == workload(docs, component)["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["maxUnavailable"] == 1


def test_memory_store_is_a_deployment_and_rocksdb_a_statefulset_with_a_volume_per_pod() -> None:
    memory = workload(render(), "detector")
    assert memory["kind"] == "Deployment"
    assert memory["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert {"name": "data", "emptyDir": {}} in memory["spec"]["template"]["spec"]["volumes"]

    docs = render(*ALL_ON)
    rocks = workload(docs, "detector")
    assert rocks["kind"] == "StatefulSet"
    (claim,) = rocks["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "data" not in {v["name"] for v in rocks["spec"]["template"]["spec"]["volumes"]}
    env = {e["name"]: e.get("value") for e in rocks["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ORDERWATCH_STORE"] == "rocksdb://"
    assert env["ORDERWATCH_DATA_DIR"] == "/var/lib/orderwatch"
    # the StatefulSet's service is headless
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == rocks["spec"]["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"


def test_detector_and_handlers_run_apart() -> None:
    docs = render()
    detector, handlers = workload(docs, "detector"), workload(docs, "handlers")
    assert "--no-handlers" in detector["spec"]["template"]["spec"]["containers"][0]["args"]
    handler_container = handlers["spec"]["template"]["spec"]["containers"][0]
    assert "--handlers-only" in handler_container["args"]
    # both answer /ready (the handlers: Redis too; the detector: blocklist, partitions, crash loops)
    assert handler_container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert detector["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert not [d for d in render("--set", "handlers.enabled=false") if "handlers" in d["metadata"]["name"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "detector.replicas=5"], "detector.replicas (5) must not exceed kafka.partitions (4)"),
        (["--set", "kafka.partitions=2", "--set", "detector.replicas=3"], "must not exceed kafka.partitions (2)"),
        (["--set", "kafka.partitions=0"], "kafka.partitions must be >= 1"),
        (["--set", "handlers.replicas=5"], "handlers.replicas (5) must not exceed kafka.partitions (4)"),
        (["--set", "detector.store=redis://x"], "detector.store must be memory:// or rocksdb://"),
        (["--set", "kafka.sasl.mechanism=PLAIN"], "name the Secret with the credentials"),
    ],
)
def test_the_chart_refuses_values_that_cannot_work(args: list[str], message: str) -> None:
    assert message in render_error(*args)


def test_secrets_only_by_reference() -> None:
    """No credential in values.yaml or in a rendered object: SASL, the API token and the Redis
    URL come from existing Secrets through secretKeyRef, and the chart creates no Secret."""
    values = (CHART / "values.yaml").read_text()
    for line in values.splitlines():
        key, _, value = line.strip().partition(":")
        if key.lower() in ("password", "token", "secret", "apitoken", "sasl_password"):
            pytest.fail(f"values.yaml holds a credential field: {line}")
        assert "password=" not in value.lower()
    docs = render(*ALL_ON)
    assert not by_kind(docs, "Secret")
    for w in (workload(docs, "detector"), workload(docs, "handlers")):
        env = {e["name"]: e for e in w["spec"]["template"]["spec"]["containers"][0]["env"]}
        for name in (
            "ORDERWATCH_SASL_USERNAME",
            "ORDERWATCH_SASL_PASSWORD",
            "ORDERWATCH_API_TOKEN",
            "ORDERWATCH_REDIS_URL",
        ):
            assert "value" not in env[name], name
            assert env[name]["valueFrom"]["secretKeyRef"]["name"].startswith("orderwatch-")
    handlers = workload(docs, "handlers")["spec"]["template"]["spec"]
    assert {"name": "handlers-config", "secret": {"secretName": "orderwatch-handlers"}} in handlers["volumes"]
    # named tokens and roles: a Secret mounted as a file the worker re-reads (rotation)
    assert {"name": "tokens", "secret": {"secretName": "orderwatch-tokens"}} in handlers["volumes"]
    container = handlers["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ORDERWATCH_TOKENS_FILE"] == "/etc/orderwatch/tokens/tokens.toml"
    assert {"name": "tokens", "mountPath": "/etc/orderwatch/tokens", "readOnly": True} in container["volumeMounts"]


def test_operator_objects_carry_the_rules_and_dashboards() -> None:
    assert not by_kind(render(), "PrometheusRule") and not by_kind(render(), "ServiceMonitor")
    docs = render(*ALL_ON)
    (rule,) = by_kind(docs, "PrometheusRule")
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    base = "https://git.example.com/orderwatch/blob/main/"
    for group in source["groups"]:
        for r in group["rules"]:
            if "annotations" in r:
                r["annotations"]["runbook_url"] = base + r["annotations"]["runbook_url"]
    assert rule["spec"]["groups"] == source["groups"]
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "web"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (dashboards,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboards")]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name in ("orderwatch-sre.json", "orderwatch-business.json"):
        assert json.loads(dashboards["data"][name]) == json.loads((ROOT / "deploy" / "grafana" / name).read_text())


def test_inline_configs_are_mounted() -> None:
    docs = render(*COMBINATIONS["inline-configs"])
    (config,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-config")]
    assert "threshold = 4" in config["data"]["handlers.toml"]
    assert "PAYMENT_TIMEOUT" in config["data"]["rules.toml"]
    detector = workload(docs, "detector")["spec"]["template"]["spec"]["containers"][0]
    assert detector["args"][-2:] == ["--config", "/etc/orderwatch/rules.toml"]
    handlers = workload(docs, "handlers")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in handlers["env"]}
    assert env["ORDERWATCH_HANDLERS_CONFIG"] == "/etc/orderwatch/handlers/handlers.toml"


def test_chart_copies_are_current() -> None:
    """The chart's files/ (what Helm can read) are the same as deploy/prometheus and deploy/grafana."""
    out = subprocess.run(
        ["python3", str(ROOT / "deploy" / "grafana" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_helm_lint_strict() -> None:
    for args in ([], ALL_ON):
        out = subprocess.run(
            [_helm(), "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr
