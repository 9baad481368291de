"""The rules of RULES.md as pure event-time logic: state + event (+ clock) in, exceptions out.

Imports nothing from faust, aiokafka, redis or prometheus_client; the backtest and the live
runtime drive the same code.
"""

from detectors.blocklist import Blocklist
from detectors.catalog import RULES, Rule
from detectors.config import RulesConfig
from detectors.engine import Engine
from detectors.records import Emission, ExceptionRecord, to_cloudevent
from detectors.replay import EventTimeReplay

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
