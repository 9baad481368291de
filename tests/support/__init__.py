"""Helpers the tests (and bench/) share: not part of the installed package."""
