"""Shared test helpers (importable as ``helpers``; tests/ is on pytest's pythonpath)."""
