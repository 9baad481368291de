"""The rules of RULES.md as pure event-time logic: state + event (+ clock) in, exceptions out.

Imports nothing from faust, aiokafka, redis or prometheus_client; the backtest and the live
runtime drive the same code.
"""

from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.catalog import RULES, Rule
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import Emission, ExceptionRecord, to_cloudevent
from orderwatch.detectors.replay import EventTimeReplay

__all__ = [
    "RULES",
    "Blocklist",
    "Emission",
    "Engine",
    "EventTimeReplay",
    "ExceptionRecord",
    "Rule",
    "RulesConfig",
    "to_cloudevent",
]
