"""What every route shares: the service (``app.state.service``), the caller's tenant from its API key,
the request body (bounded, then decompressed), JSON parsed into a typed request, and the rule that a
future-returning call answers a bad request with a failed future rather than an HTTP error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from ...errors import UserError
from ..service import TinkerService
from ..wire import BodyTooLarge, decompress

M = TypeVar("M", bound=BaseModel)
API = "/api/v1"


class Unauthorized(Exception):
    """HTTP 401: no API key, or one this server did not issue."""


def service_of(request: Request) -> TinkerService:
    return request.app.state.service


# Dependencies are async: a plain def would cost every request a thread-pool hop for a lookup.
async def _service(request: Request) -> TinkerService:
    return service_of(request)


async def _tenant(request: Request) -> str:
    key = request.headers.get("x-api-key")
    if key is None and request.headers.get("authorization", "").lower().startswith("bearer "):
        key = request.headers["authorization"][7:].strip()
    tenant = service_of(request).tenant_of(key)
    if tenant is None:
        raise Unauthorized("missing or unknown API key: send X-API-Key with a key issued for this server "
                           "(keys start with 'tml-')")
    return tenant


Service = Annotated[TinkerService, Depends(_service)]
Tenant = Annotated[str, Depends(_tenant)]  # every /api/v1 route but the signed download needs a key


async def read_body(request: Request) -> bytes:
    """The whole body, decompressed; :class:`BodyTooLarge` past the server's limit, checked as the
    bytes arrive so an oversized upload is never held in memory."""
    limit = service_of(request).max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds the server's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the server's limit of {limit} bytes")
        chunks.append(chunk)
    return decompress(b"".join(chunks), request.headers.get("content-encoding"), limit)


async def parse(request: Request, model: type[M]) -> M:
    """The JSON body as ``model``; a :class:`UserError` naming the bad fields otherwise."""
    body = await read_body(request)
    try:
        return model.model_validate(json.loads(body or b"{}"))
    except (ValueError, ValidationError) as exc:
        raise UserError(f"invalid {model.__name__} request: {_summary(exc)}") from exc


async def as_future(request: Request, tenant: str, operation: str, model: type[M],
                    call: Callable[[str, M], dict[str, Any]]) -> dict[str, Any]:
    """Runs a future-returning call off the event loop; a bad request becomes a failed future (the
    SDK raises it as ``RequestFailedError`` with the message), not an HTTP error."""
    try:
        req = await parse(request, model)
        return await run_in_threadpool(call, tenant, req)
    except UserError as exc:
        return service_of(request).failed(tenant, operation, exc)


def page_size(limit: int) -> int:
    return min(max(limit, 1), 1000)


def _summary(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                         for e in exc.errors()[:5])
    return str(exc)
