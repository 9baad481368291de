"""Session-wide test settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _faust_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """faust makes its data directory (`<app id>-data`, even with the memory:// store) in the
    working directory unless ORDERWATCH_DATA_DIR says where: the tests' Settings and the workers
    they spawn take this temporary one, so a run leaves nothing in the checkout. A test that needs
    its own (rocksdb://) sets `data_dir` itself."""
    before = os.environ.get("ORDERWATCH_DATA_DIR")
    os.environ["ORDERWATCH_DATA_DIR"] = str(tmp_path_factory.mktemp("faust-data"))
    yield
    if before is None:
        os.environ.pop("ORDERWATCH_DATA_DIR", None)
    else:
        os.environ["ORDERWATCH_DATA_DIR"] = before
