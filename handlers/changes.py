"""What the case store tells the rest of the handlers: one `CaseChange` per lifecycle move.

Actions and notifications react to changes, never to raw exception events, so a replayed event
that changes nothing reaches neither of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from orderwatch.schemas.exception_event import ExceptionData

__all__ = ["CaseChange", "CaseListener", "ChangeKind"]

ChangeKind = Literal["opened", "acknowledged", "escalated", "resolved"]


@dataclass(frozen=True, slots=True)
class CaseChange:
    kind: ChangeKind
    """The move that just happened (recorded in Redis before anyone is told)."""
    data: ExceptionData
    """The exception as last seen. Evidence is raw: mask it before showing it to people."""
    status: str
    """The case's status after the move: open, acknowledged, escalated or resolved."""
    at: datetime
    """When the move happened, on the handlers' clock."""
    level: int = 0
    """Escalation level after the move (1 at handle_by, 2 at twice the handling time)."""
    who: str = "orderwatch"
    """Who made the move: `orderwatch` for automatic ones, the API caller otherwise."""
    note: str | None = None
    incident_id: str | None = None
    """The incident this case belongs to, if its cause is shared by others."""
    incident_count: int = 0
    """Members of that incident so far."""
    suppressed: bool = False
    """True when the incident already paged: notify about the incident, not about each case."""
    paging: bool = False
    """True on the change whose case made its incident reach the threshold: the one incident page."""


CaseListener = Callable[[CaseChange], Awaitable[None]]
"""Something that acts on a change (actions, notifications). It must be idempotent per
(exception_id, kind, level): after a crash the same change may be delivered again."""
