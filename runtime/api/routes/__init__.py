"""The HTTP routes of the Tinker wire protocol, one router per area; ``create_app`` includes them."""

from __future__ import annotations

from fastapi import APIRouter

from . import futures, rest, sampling, service, sessions, training

ROUTERS: tuple[APIRouter, ...] = (service.router, sessions.router, training.router, sampling.router,
                                  futures.router, rest.router)

__all__ = ["ROUTERS"]
