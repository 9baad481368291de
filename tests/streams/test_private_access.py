"""faust's and aiokafka's private state is read in one module only, streams/consumer_port.py: a
scan of the package's source for private attribute access on their objects fails naming the file
and line of each one found elsewhere, so a faust upgrade still touches one file."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

import aiokafka
import faust
import pytest

import orderwatch

ROOT = Path(orderwatch.__file__).resolve().parent
PORT = "orderwatch/streams/consumer_port.py"

PUBLIC_BUT_PORTED = frozenset({"assignor"})
"""Attributes that are not underscored but whose answers the port owns (faust's assignor raises
before the first assignment): `ConsumerPort.actives`."""


def _private_names(package: object) -> frozenset[str]:
    """Every `self._name` a library's source assigns or reads: the private attributes its objects
    carry, which code outside the port must not reach for on them."""
    root = Path(package.__file__).resolve().parent  # type: ignore[attr-defined]
    names: set[str] = set()
    for path in root.rglob("*.py"):
        names.update(re.findall(r"\bself\.(_[A-Za-z]\w*)", path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(n for n in names if not n.startswith("__"))


LIBRARY_PRIVATE = _private_names(faust) | _private_names(aiokafka)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_access(source: str, library_private: frozenset[str] = LIBRARY_PRIVATE) -> Iterator[tuple[int, str]]:
    """(line, what) of each access to a library's private state in `source`: `x._name` where
    `_name` is one of the libraries' private attributes and `x` is not the code's own `self` or
    `cls`; `getattr`/`setattr`/`hasattr`/`delattr` with a private name; any `.assignor`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            theirs = _private(node.attr) and not own and node.attr in library_private
            if theirs or node.attr in PUBLIC_BUT_PORTED:
                yield node.lineno, f".{node.attr}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            yield node.lineno, f'{node.func.id}(..., "{node.args[1].value}")'


def _package_files() -> Iterator[tuple[str, Path]]:
    # Through the symlinked sub-packages (schemas, detectors, streams, handlers), which Path.rglob
    # does not follow before Python 3.13.
    for folder, _dirs, files in sorted(os.walk(ROOT, followlinks=True)):
        for file in sorted(files):
            if file.endswith(".py"):
                path = Path(folder) / file
                yield "orderwatch/" + path.relative_to(ROOT).as_posix(), path


def test_only_the_consumer_port_reads_faust_or_aiokafka_private_state() -> None:
    found = [
        f"{name}:{line}: {what}"
        for name, path in _package_files()
        if name != PORT
        for line, what in private_access(path.read_text(encoding="utf-8"))
    ]
    assert not found, "faust/aiokafka private access outside streams/consumer_port.py:\n" + "\n".join(found)


def test_the_scan_sees_the_package_and_the_port_s_own_accesses() -> None:
    names = {name for name, _ in _package_files()}
    assert {PORT, "orderwatch/streams/handling.py", "orderwatch/handlers/service.py"} <= names
    port = (ROOT / "streams" / "consumer_port.py").read_text(encoding="utf-8")
    seen = {what for _, what in private_access(port)}
    assert {'getattr(..., "_committed_offset")', ".assignor", "._read_offset", 'hasattr(..., "_read_offset")'} <= seen
    assert {"_committed_offset", "_read_offset", "_fetcher", "_thread"} <= LIBRARY_PRIVATE


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("off = app.consumer._committed_offset[tp]", "._committed_offset"),
        ("x = getattr(app.consumer, '_committed_offset', {})", 'getattr(..., "_committed_offset")'),
        ("app.consumer._read_offset = {}", "._read_offset"),
        ("actives = app.assignor.assigned_actives()", ".assignor"),
        ("f = consumer._thread._ensure_consumer()._fetcher", "._fetcher"),
    ],
)
def test_each_form_of_private_access_is_found_with_its_line(source: str, what: str) -> None:
    assert (2, what) in set(private_access("import faust\n" + source))


def test_the_code_s_own_private_attributes_are_not_flagged() -> None:
    assert list(private_access("class A:\n    def f(self):\n        return self._committed_offset\n")) == []
    assert list(private_access("x = obj._our_own_name\n")) == []
