"""The jump guard and the per-source clock: no single event, and no single producer with a skewed
clock, moves the clock of a replay (docs/rules.md)."""

from __future__ import annotations

import pytest

from orderwatch.detectors.engine import Engine
from orderwatch.detectors.replay import EventTimeReplay
from orderwatch.detectors.skew import JumpGuard
from orderwatch.schemas.events import TOPIC_OF_TYPE
from tests.factories import T0, at, created, event, opened, paid

H = 3600.0
t0 = T0.timestamp()


def test_events_within_the_skew_pass_and_move_the_progress() -> None:
    guard: JumpGuard[str] = JumpGuard(max_skew=H)
    assert guard.offer(t0, "a").accepted == ["a"]
    assert guard.offer(t0 + 0.5 * H, "b").accepted == ["b"]
    assert guard.progress == t0 + 0.5 * H


def test_a_lone_jump_is_held_then_refused_by_the_ordinary_events_after_it() -> None:
    guard: JumpGuard[str] = JumpGuard(max_skew=H, refute_after=3)
    guard.offer(t0, "a")
    jump = guard.offer(t0 + 24 * H, "future")
    assert jump.accepted == [] and guard.held == 1
    assert guard.progress == t0  # it moved nothing
    assert guard.offer(t0 + 1, "b").refused == []
    assert guard.offer(t0 + 2, "c").refused == []
    last = guard.offer(t0 + 3, "d")
    assert last.accepted == ["d"] and last.refused == ["future"]
    assert guard.held == 0 and guard.refused == 1


def test_a_run_of_close_jumps_confirms_them() -> None:
    # A quiet night: the first morning events are jumps, three in a row confirm the move.
    guard: JumpGuard[str] = JumpGuard(max_skew=H, confirm=3)
    guard.offer(t0, "evening")
    assert guard.offer(t0 + 9 * H, "morning-1").accepted == []
    assert guard.offer(t0 + 9 * H + 60, "morning-2").accepted == []
    got = guard.offer(t0 + 9 * H + 90, "morning-3")
    assert got.accepted == ["morning-1", "morning-2", "morning-3"]
    assert guard.progress == t0 + 9 * H + 90


def test_jumps_scattered_among_ordinary_events_never_confirm() -> None:
    # Many bad clocks at once: close jumps, but ordinary events between them.
    guard: JumpGuard[str] = JumpGuard(max_skew=H, confirm=3, refute_after=50)
    guard.offer(t0, "a")
    for k in range(30):
        assert guard.offer(t0 + 24 * H + k, f"jump-{k}").accepted == []
        assert guard.offer(t0 + k, f"ok-{k}").accepted == [f"ok-{k}"]
    assert guard.progress == t0 + 29 and guard.held == 30


def test_a_held_jump_is_accepted_once_the_input_catches_up() -> None:
    guard: JumpGuard[str] = JumpGuard(max_skew=H, refute_after=100)
    guard.offer(t0, "a")
    guard.offer(t0 + 2 * H, "ahead")
    assert guard.offer(t0 + 0.9 * H, "b").accepted == ["b"]
    assert guard.offer(t0 + 1.5 * H, "c").accepted == ["c", "ahead"]


def test_two_unrelated_jumps_do_not_confirm_each_other() -> None:
    guard: JumpGuard[str] = JumpGuard(max_skew=H)
    guard.offer(t0, "a")
    guard.offer(t0 + 24 * H, "x")
    assert guard.offer(t0 + 48 * H, "y").accepted == []
    assert guard.held == 2
    assert guard.release_all() == ["x", "y"]


def test_off_and_bad_settings() -> None:
    guard: JumpGuard[str] = JumpGuard(max_skew=None)
    guard.offer(t0, "a")
    assert guard.offer(t0 + 1000 * H, "b").accepted == ["b"]
    with pytest.raises(ValueError, match="max_skew"):
        JumpGuard(max_skew=0)
    with pytest.raises(ValueError, match="refute_after"):
        JumpGuard(max_skew=H, refute_after=0)
    with pytest.raises(ValueError, match="confirm"):
        JumpGuard(max_skew=H, confirm=1)


def _topic(ev: object) -> str:
    return TOPIC_OF_TYPE[ev.type]  # type: ignore[attr-defined]


def _snapshot(when_hours: float, sku: str = "sku-far") -> object:
    data = {"sku": sku, "warehouse_id": "w-1", "on_hand": 5, "reserved": 0}
    return event("inventory.level_reported", sku, at(hours=when_hours), data)


def _stream(n: int) -> list[object]:
    """n orders, each paid two minutes after it was created, one a minute."""
    out: list[object] = []
    for i in range(n):
        out += [created(f"o-{i}", at(i)), paid(f"o-{i}", at(i + 2))]
    return out


def _replay(events: list[object], **kw: object) -> tuple[list[str], EventTimeReplay]:
    replay = EventTimeReplay(Engine(), lateness=60, source_of=_topic, **kw)  # type: ignore[arg-type]
    ems = []
    for ev in events:
        ems += replay.push(ev)
    ems += replay.finish()
    return sorted(f"{e.kind}:{e.record.rule}:{e.record.subject}" for e in ems), replay


def test_one_snapshot_a_day_ahead_changes_nothing_and_is_refused() -> None:
    clean, _ = _replay(_stream(60))
    skewed = _stream(60)
    skewed.insert(20, _snapshot(24))
    got, replay = _replay(skewed)
    assert got == clean
    assert [ev.type for ev, _ in replay.refused] == ["inventory.level_reported"]  # type: ignore[attr-defined]


def test_a_producer_whose_clock_is_a_day_ahead_moves_only_its_own_topic() -> None:
    # A warehouse system a day fast sends its snapshots in runs, so the guard accepts them; the
    # clock follows the slowest active topic, so no order's deadline fires early.
    clean, _ = _replay(_stream(60))
    skewed = _stream(60)
    skus = [f"sku-far-{k}" for k in range(12)]
    for k in range(4):
        run = [_snapshot(24 + (3 * k + j) / 60, sku=skus[3 * k + j]) for j in range(3)]
        skewed[5 + 30 * k : 5 + 30 * k] = run
    got, replay = _replay(skewed)
    assert replay.refused == []
    assert replay.guard.progress > t0 + 23 * H  # accepted: the guard alone would not have helped
    assert [g for g in got if not g.endswith(tuple(skus))] == clean


def test_without_the_per_source_clock_the_same_stream_floods() -> None:
    # The guard against the test above proving nothing: with one global watermark and no guard,
    # the skewed producer fires every pending payment deadline a day early.
    events = [created("o-1", T0), _snapshot(24), _snapshot(24.01, sku="s2"), paid("o-1", at(20))]
    replay = EventTimeReplay(Engine(), lateness=60)
    ems = [em for ev in events for em in replay.push(ev)] + replay.finish()
    assert "PAYMENT_TIMEOUT" in [e.record.rule for e in opened(ems)]
    guarded, _ = _replay(events)
    assert not [g for g in guarded if g.startswith("opened:PAYMENT_TIMEOUT")]
