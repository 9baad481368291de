"""The review package stands alone: no faust, no streams, no Redis client, so it runs offline."""

from __future__ import annotations

import subprocess
import sys


def test_review_imports_neither_faust_nor_streams_nor_handlers() -> None:
    code = (
        "import sys, orderwatch.review, orderwatch.review.report, orderwatch.calibrate; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('faust', 'redis')"
        " or m.startswith(('orderwatch.streams', 'orderwatch.handlers')));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
