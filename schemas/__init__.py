"""Wire contract of orderwatch: input CloudEvents, exception events, dead letters (pydantic)."""

from orderwatch.schemas.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    INPUT_TOPICS,
    TOPIC_OF_TYPE,
    Address,
    CloudEvent,
    Event,
    LineItem,
    parse_event,
)
from orderwatch.schemas.exception_event import ExceptionData, ExceptionEvent, Resolution

__all__ = [
    "EVENT_MODELS",
    "EVENT_TYPES",
    "INPUT_TOPICS",
    "TOPIC_OF_TYPE",
    "Address",
    "CloudEvent",
    "Event",
    "ExceptionData",
    "ExceptionEvent",
    "LineItem",
    "Resolution",
    "parse_event",
]
