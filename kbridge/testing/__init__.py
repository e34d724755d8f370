"""Helpers for testing kbridge apps against real services."""
