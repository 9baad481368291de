"""Handler agents: turn exception events into cases, escalations and actions."""
