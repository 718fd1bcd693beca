"""Errors the engine raises, with the category the Tinker wire protocol reports them under."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: an operation failed and left every job as it was before the call."""

    category = "server"


class UserError(EngineError):
    """The request was wrong (shape, token id, unknown job or loss); the message says how to fix it."""

    category = "user"


class UnknownModelError(UserError):
    """No job, adapter or checkpoint with that id exists (or it belongs to someone else)."""
