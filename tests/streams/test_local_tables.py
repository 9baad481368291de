"""LocalTables: the rocksdb:// store's local files survive a clean stop and are discarded after a
crash (the run that left them never marked its stop), so faust restores them from the changelogs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orderwatch.streams.local_tables import CLEAN_STOP_MARKER, LocalTables


def _tables(tmp_path: Path) -> Path:
    tabledir = tmp_path / "app-data" / "v1" / "tables"
    for name in ("orders-state-0.db", "orders-state-1.db"):
        (tabledir / name).mkdir(parents=True)
        (tabledir / name / "000001.log").write_bytes(b"wal")
    return tabledir


def test_a_crash_leaves_no_marker_so_the_next_start_discards_the_local_tables(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    tables = LocalTables(tabledir, "rocksdb://")
    assert tables.claim() is True
    assert tables.databases() == []
    assert "discarded 2 local table files" in tables.outcome


def test_a_clean_stop_keeps_the_local_tables_for_the_next_start_and_only_that_one(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    first = LocalTables(tabledir, "rocksdb://")
    first.claim()  # nothing marked: discarded
    (tabledir / "orders-state-0.db").mkdir()  # what the run writes
    first.stopped_cleanly()
    assert (tabledir / CLEAN_STOP_MARKER).exists()

    second = LocalTables(tabledir, "rocksdb://")
    assert second.claim() is False
    assert [p.name for p in second.databases()] == ["orders-state-0.db"]
    assert second.outcome.startswith("kept 1 local table files")
    # The marker is spent: if this run now crashes, the start after it discards again.
    assert not (tabledir / CLEAN_STOP_MARKER).exists()
    assert LocalTables(tabledir, "rocksdb://").claim() is True


def test_a_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    tables = LocalTables(tmp_path / "missing" / "tables", "rocksdb://")
    assert tables.claim() is False
    assert tables.outcome.startswith("no local table files")
    tables.stopped_cleanly()  # faust never created the directory: nothing to mark
    assert not (tmp_path / "missing").exists()


def test_the_memory_store_has_no_local_files_and_touches_nothing(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    tables = LocalTables(tabledir, "memory://")
    assert tables.claim() is False
    tables.stopped_cleanly()
    assert len(tables.databases()) == 2
    assert not (tabledir / CLEAN_STOP_MARKER).exists()


def test_files_that_are_not_table_databases_are_left_alone(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    (tabledir / "notes.txt").write_text("an operator's")
    (tabledir / "backup").mkdir()
    LocalTables(tabledir, "rocksdb://").claim()
    assert sorted(p.name for p in tabledir.iterdir()) == ["backup", "notes.txt"]


def test_the_decision_is_logged_a_discard_as_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tabledir = _tables(tmp_path)
    tables = LocalTables(tabledir, "rocksdb://")
    tables.claim()
    with caplog.at_level(logging.INFO, logger="orderwatch.streams.local_tables"):
        tables.report()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "did not stop cleanly" in caplog.records[0].getMessage()

    (tabledir / "orders-state-0.db").mkdir()
    tables.stopped_cleanly()
    caplog.clear()
    kept = LocalTables(tabledir, "rocksdb://")
    kept.claim()
    with caplog.at_level(logging.INFO, logger="orderwatch.streams.local_tables"):
        kept.report()
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "kept 1 local table files" in caplog.records[0].getMessage()
