"""The handlers' public names, pinned: a rename here breaks the API, the actions/notify listeners
or the worker wiring, so it must be deliberate."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPORTS = {
    "orderwatch.handlers.privacy": {"MASK", "PERSONAL_KEYS", "mask_evidence", "mask_summary", "mask_text"},
    "orderwatch.handlers.cases": {
        "ALLOWED_FROM",
        "MAX_LEVEL",
        "STATUSES",
        "Case",
        "CaseStatus",
        "HistoryEntry",
        "change_id",
        "check_transition",
        "escalation_times",
        "next_escalation",
        "transition_error",
        "wire_status",
    },
    "orderwatch.handlers.store": {"CaseStore", "OutboxMessage", "case_key", "open_redis", "redis_call"},
    "orderwatch.handlers.incidents": {
        "INCIDENT_STATUSES",
        "Incident",
        "IncidentNotFound",
        "IncidentStore",
        "Membership",
        "cause_of",
        "incident_id_for",
    },
    "orderwatch.handlers.config": {
        "DIMENSIONS",
        "EscalationConfig",
        "HandlersConfig",
        "IncidentConfig",
        "OwnersConfig",
        "SECTIONS",
        "load_handlers_config",
        "load_section",
        "read_toml",
    },
    "orderwatch.handlers.service": {"HandlerService", "Sender"},
}


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_exports(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == EXPORTS[module]
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_no_faust_in_handlers() -> None:
    """STYLE: only streams/ imports faust. Checked in a fresh interpreter (other tests load faust)."""
    code = (
        "import sys; import "
        + ", ".join(sorted(EXPORTS))
        + "; print(sorted(m for m in sys.modules if m.split('.')[0] == 'faust'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
