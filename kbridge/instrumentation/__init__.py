"""Instrumentation: a fixed list of named events, and listeners that turn them into logs and metrics."""

from .monitor import EVENTS, Monitor

__all__ = ["EVENTS", "Monitor"]
