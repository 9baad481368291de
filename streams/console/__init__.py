"""The ops console: web pages for the people who work the cases (see docs/handlers.md)."""
