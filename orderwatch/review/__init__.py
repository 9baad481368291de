"""The review step: exception analytics over cases and exception events, the periodic report."""

from orderwatch.review.analytics import DIMENSIONS, GROUPS, Analytics, Period
from orderwatch.review.dataset import CaseSet, read_case_set

__all__ = ["DIMENSIONS", "GROUPS", "Analytics", "CaseSet", "Period", "read_case_set"]
