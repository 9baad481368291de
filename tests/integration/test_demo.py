"""`orderwatch demo` end to end on the local stack: the README's main command."""

from __future__ import annotations

import io

import pytest

from orderwatch.streams.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_scores_every_rule_perfectly() -> None:
    out = io.StringIO()
    misses = run_demo(orders=600, seed=3, timeout=200, out=out)
    text = out.getvalue()
    assert misses == 0, text[-3000:]
    assert "all rules at precision and recall 1.000" in text
    assert "worker started" in text and "published" in text
