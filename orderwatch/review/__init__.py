"""The review step: exception analytics over cases and exception events, the periodic report.

Names load lazily so that the command line does not import DuckDB until a review runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderwatch.review.analytics import DIMENSIONS, GROUPS, Analytics, Period
    from orderwatch.review.dataset import CaseSet, read_case_set

__all__ = ["DIMENSIONS", "GROUPS", "Analytics", "CaseSet", "Period", "read_case_set"]

_HOME = {
    "DIMENSIONS": "analytics",
    "GROUPS": "analytics",
    "Analytics": "analytics",
    "Period": "analytics",
    "CaseSet": "dataset",
    "read_case_set": "dataset",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"orderwatch.review.{_HOME[name]}"), name)
    msg = f"module 'orderwatch.review' has no attribute {name!r}"
    raise AttributeError(msg)
