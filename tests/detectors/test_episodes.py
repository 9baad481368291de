"""The packed form of an order's episodes (detectors/orders/episodes.py) against a plain list of
episodes doing the same operations: every id and ref comes back as the same text, deadlines
exactly, in the same order."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.orders import episodes as packed
from orderwatch.detectors.snapshots import RULE_IDS

RULES = sorted(RULE_IDS)

ids = st.one_of(
    st.uuids().map(str),  # canonical: stored in 16 bytes
    st.uuids().map(lambda u: str(u).upper()),  # not canonical: kept as text, case and all
    st.uuids().map(lambda u: str(u).replace("-", "")),
    st.sampled_from(
        [
            "",
            "e-1",
            "0" * 36,
            "a" * 300,
            "é-ü-Ω",
            "00000000-0000-0000-0000-000000000000",
            "0000000g-0000-0000-0000-000000000000",
            "12 45678-1234-1234-1234-123456789012",  # bytes.fromhex skips spaces
            "12345678-1234-1234-1234-12345678901 ",
        ]
    ),
    st.text(max_size=40),
)
# A few ids over and over: one event starts several episodes, which then share its id.
shared = st.sampled_from(["e-1", str(uuid.UUID(int=1))])
refs = st.one_of(st.none(), st.none(), st.sampled_from(["r-1", "r-2"]), ids)
dues = st.floats(allow_nan=False, allow_infinity=False)
start_ids = st.one_of(shared, shared, shared, ids)
op = st.tuples(st.sampled_from(["put", "put", "remove"]), st.sampled_from(RULES[:4]), refs, dues, start_ids)


def _model_put(model: list[packed.Episode], rule: str, due: float, sid: str, ref: str | None) -> None:
    model[:] = [ep for ep in model if (ep[0], ep[3]) != (rule, ref)]
    model.append((rule, due, sid, ref))


@settings(max_examples=500, deadline=None)
@given(st.lists(op, max_size=25))
def test_operations_agree_with_a_list_of_episodes(ops: list[tuple[str, str, str | None, float, str]]) -> None:
    eps, model = b"", []
    for kind, rule, ref, due, sid in ops:
        if kind == "put":
            eps = packed.put(eps, rule, due, sid, ref)
            _model_put(model, rule, due, sid, ref)
        else:
            i = packed.find(eps, rule, ref)
            j = next((n for n, ep in enumerate(model) if (ep[0], ep[3]) == (rule, ref)), -1)
            assert (i >= 0) == (j >= 0)
            if i >= 0:
                eps = packed.remove(eps, i)
                del model[j]
        assert packed.decode(eps) == model
        assert packed.rule_names(eps) == [ep[0] for ep in reversed(model)]
        assert packed.earliest(eps) == (min(ep[1] for ep in model) if model else None)
        assert packed.due_before(eps, due) == sorted((ep for ep in model if ep[1] < due), key=lambda ep: ep[1])
        for ep in model:
            i = packed.find(eps, ep[0], ep[3])
            assert packed.episode(eps, i) == ep
            assert packed.deadline(eps, i) == ep[1]
    assert packed.decode(packed.encode(model)) == model


def test_a_canonical_uuid_takes_16_bytes_and_other_text_its_length() -> None:
    u = str(uuid.uuid4())
    one = packed.put(b"", "ORDER_STUCK", 1.5, u)
    assert len(one) == 2 + 1 + 8 + 17
    upper = packed.put(b"", "ORDER_STUCK", 1.5, u.upper())
    assert len(upper) == 2 + 1 + 8 + 1 + 36
    assert packed.decode(upper) == [("ORDER_STUCK", 1.5, u.upper(), None)]


def test_an_id_shared_by_episodes_is_stored_once() -> None:
    u = str(uuid.uuid4())
    eps = b""
    for n, rule in enumerate(("PAYMENT_NOT_CONFIRMED", "PAYMENT_AMOUNT_MISMATCH", "STOCK_NOT_RESERVED")):
        eps = packed.put(eps, rule, float(n), u)
    assert len(eps) == 2 + 3 * 9 + 17 + 2  # the oldest holds the id, the two newer say "the same"
    eps = packed.remove(eps, 2)  # the oldest goes: the next one takes the id itself
    assert len(eps) == 2 + 2 * 9 + 17 + 1
    assert [ep[2] for ep in packed.decode(eps)] == [u, u]


def test_a_restart_by_the_same_event_as_an_older_episode_with_a_ref_stores_no_id() -> None:
    eps = packed.put(b"", "REFUND_OVERDUE", 1.0, "X", "r1")
    eps = packed.put(eps, "REFUND_OVERDUE", 2.0, "X", "r2")  # "the same" as the one before, then its ref
    eps = packed.put(eps, "ORDER_STUCK", 3.0, "Y")
    eps = packed.put(eps, "ORDER_STUCK", 4.0, "X")
    assert len(eps) == 2 + 3 * 9 + 1 + (1 + 3) + (2 + 3)  # ids: "the same" twice, then X
    assert packed.decode(eps) == [
        ("REFUND_OVERDUE", 1.0, "X", "r1"),
        ("REFUND_OVERDUE", 2.0, "X", "r2"),
        ("ORDER_STUCK", 4.0, "X", None),
    ]


def test_empty_state_is_the_empty_bytes() -> None:
    eps = packed.put(b"", "_GC", 3.0, "")
    assert packed.remove(eps, 0) == b""
    assert packed.decode(b"") == [] and packed.earliest(b"") is None and packed.find(b"", "_GC") == -1


def test_episodes_of_one_rule_told_apart_by_ref() -> None:
    eps = b""
    for n in range(300):  # more than a byte's worth, and long refs
        eps = packed.put(eps, "REFUND_OVERDUE", float(n), str(uuid.UUID(int=n)), f"refund-{n}-" + "x" * 260)
    eps = packed.put(eps, "ORDER_STUCK", -1.0, "e")
    assert packed.find(eps, "REFUND_OVERDUE") == -1  # no ref: not one of them
    i = packed.find(eps, "REFUND_OVERDUE", "refund-150-" + "x" * 260)
    assert packed.episode(eps, i)[1:3] == (150.0, str(uuid.UUID(int=150)))
    eps = packed.remove(eps, i)
    assert packed.find(eps, "REFUND_OVERDUE", "refund-150-" + "x" * 260) == -1
    assert len(packed.decode(eps)) == 300 and packed.earliest(eps) == -1.0


@pytest.mark.parametrize("rule", ["NOT_A_RULE", ""])
def test_an_unknown_rule_is_refused(rule: str) -> None:
    with pytest.raises(KeyError):
        packed.put(b"", rule, 1.0, "e")
