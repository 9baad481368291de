"""orderwatch: detects e-commerce order exceptions as they happen.

This package holds the command line, the error hierarchy and the batch drivers (backtest,
simulator); the rules live in `detectors`, the wire models in `schemas`.
"""

__version__ = "0.1.0"
