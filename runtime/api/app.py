"""The ASGI app of the Tinker wire protocol (SDK 0.38): the routers of ``routes/``, the error
contract, request metrics, and the engine's worker started and stopped with the server.

Error contract: calls that return a future never fail at submission for a bad request; the future
fails instead, and ``retrieve_future`` answers HTTP 200 ``{"error", "category": "user"}``, which the
SDK raises as ``RequestFailedError`` with the message. Synchronous calls answer 400 (bad request),
401 (bad API key), 403 (a signed download URL that is altered or expired), 404 (not found, or owned
by another tenant), 410 (finished session), 413 (body too large) or 429 (queue full), each with the
same JSON shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UnknownModelError, UserError
from .external import Forbidden
from .routes import ROUTERS
from .routes.plumbing import Unauthorized
from .service import Overloaded, SessionGone, TinkerService
from .wire import BodyTooLarge

# Exception -> (HTTP status, error category); a subclass takes its own entry before its base's.
ERRORS: dict[type[Exception], tuple[int, str]] = {
    UserError: (400, "user"),
    Unauthorized: (401, "user"),
    Forbidden: (403, "user"),
    UnknownModelError: (404, "user"),
    SessionGone: (410, "user"),
    BodyTooLarge: (413, "user"),
    Overloaded: (429, "server"),
}


def create_app(service: TinkerService) -> FastAPI:
    """The ASGI app; starts the engine's worker with the server and stops it on shutdown."""
    app = FastAPI(title="kubetune training server (Tinker API)", lifespan=_lifespan, docs_url=None,
                  redoc_url=None)
    app.state.service = service
    app.add_middleware(_RequestMetrics, service=service)
    for exc_type, (status, category) in ERRORS.items():
        app.add_exception_handler(exc_type, _error_handler(status, category))
    for router in ROUTERS:
        app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: TinkerService = app.state.service
    service.start(asyncio.get_running_loop())  # futures complete on the worker, wake polls on this loop
    try:
        yield
    finally:
        service.stop()


def _error_handler(status: int, category: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:  # async: no thread-pool hop
        return JSONResponse({"error": str(exc), "category": category}, status_code=status)

    return handle


class _RequestMetrics:
    """Counts every HTTP request by route template and status class (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, service: TinkerService):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            self.service.count_request(getattr(route, "path", "unmatched"), status)
