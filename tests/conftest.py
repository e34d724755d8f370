"""Shared fixtures: one broker and one Redis per session (kbridge.testing.pytest_plugin)."""
