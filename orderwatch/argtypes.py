"""Argument types shared by the command line's modules (`cli`, `calibrate_cli`), so that neither
imports the other for them."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        msg = f"expected a whole number >= 1, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(value)
