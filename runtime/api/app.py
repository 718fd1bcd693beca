"""HTTP routes of the Tinker wire protocol (SDK 0.38), plus health, readiness and metrics.

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
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine.errors import UnknownModelError, UserError
from . import requests as rq
from .external import DOWNLOAD_PREFIX, FileGrant, Forbidden, parse_expires
from .futures import ProtoResult
from .service import Overloaded, SessionGone, TinkerService
from .wire import PROTO_CONTENT_TYPE, BodyTooLarge, decompress

M = TypeVar("M", bound=BaseModel)
API = "/api/v1"


class Unauthorized(Exception):
    pass


def create_app(service: TinkerService) -> FastAPI:
    """The ASGI app; starts the engine's worker with the server and stops it on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.futures.bind_loop(asyncio.get_running_loop())
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="kubetune training server (Tinker API)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(_RequestMetrics, service=service)
    limit = service.config.max_request_bytes

    # --------------------------------------------------------------- errors
    def error(status: int, message: str, category: str = "user") -> JSONResponse:
        return JSONResponse({"error": message, "category": category}, status_code=status)

    app.add_exception_handler(Unauthorized, lambda r, e: error(401, str(e)))
    app.add_exception_handler(Forbidden, lambda r, e: error(403, str(e)))
    app.add_exception_handler(UnknownModelError, lambda r, e: error(404, str(e)))
    app.add_exception_handler(UserError, lambda r, e: error(400, str(e)))
    app.add_exception_handler(SessionGone, lambda r, e: error(410, str(e)))
    app.add_exception_handler(Overloaded, lambda r, e: error(429, str(e), "server"))
    app.add_exception_handler(BodyTooLarge, lambda r, e: error(413, str(e)))

    async def tenant_of(request: Request) -> str:
        # async: a plain def dependency would cost every request a thread-pool hop for a dict lookup
        key = request.headers.get("x-api-key")
        if key is None and request.headers.get("authorization", "").lower().startswith("bearer "):
            key = request.headers["authorization"][7:].strip()
        tenant = service.tenants.resolve(key)
        if tenant is None:
            raise Unauthorized("missing or unknown API key: send X-API-Key with a key issued for this server "
                               "(keys start with 'tml-')")
        return tenant

    async def body_of(request: Request) -> bytes:
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
        body = await body_of(request)
        try:
            return model.model_validate(json.loads(body or b"{}"))
        except (ValueError, ValidationError) as exc:
            raise UserError(f"invalid {model.__name__} request: {_summary(exc)}") from exc

    async def future(request: Request, tenant: str, operation: str, model: type[M],
                     call: Callable[[str, M], dict[str, Any]]) -> dict[str, Any]:
        """Runs a future-returning call; a bad request becomes a failed future, not an HTTP error."""
        try:
            req = await parse(request, model)
            return await run_in_threadpool(call, tenant, req)
        except UserError as exc:
            return service.failed(tenant, operation, exc)

    Tenant = Depends(tenant_of)

    # ------------------------------------------------------------- service
    @app.get("/healthz")
    @app.get(f"{API}/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = service.scheduler.alive
        return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(f"{API}/client/config")
    async def client_config(tenant: str = Tenant) -> dict[str, Any]:
        # Plain API keys (no JWT exchange); forward_backward chunks may arrive in parallel.
        return {"pjwt_auth_enabled": False, "proto_compress_fwdbwd": False, "parallel_fwdbwd_chunks": True,
                "sample_use_retrieve_futures": False, "custom_loss_server_side": False,
                "sample_join_sampling_session": False,
                "fwdbwd_max_chunk_len": service.config.fwdbwd_max_chunk_len}

    @app.post(f"{API}/client/dynamic_config")
    async def dynamic_config(tenant: str = Tenant) -> dict[str, Any]:
        return {}

    @app.post(f"{API}/telemetry")
    async def telemetry(request: Request, tenant: str = Tenant) -> dict[str, str]:
        await body_of(request)  # accepted and dropped: nothing leaves this server
        return {"status": "accepted"}

    @app.get(f"{API}/get_server_capabilities")
    async def capabilities(tenant: str = Tenant) -> dict[str, Any]:
        return service.capabilities()

    # ------------------------------------------------------------ sessions
    @app.post(f"{API}/create_session")
    async def create_session(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return service.create_session(tenant, await parse(request, rq.CreateSession))

    @app.post(f"{API}/session_heartbeat")
    async def heartbeat(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return service.heartbeat(tenant, await parse(request, rq.SessionRef))

    @app.post(f"{API}/sessions/{{session_id}}/finish")
    async def finish(session_id: str, request: Request, tenant: str = Tenant) -> dict[str, Any]:
        await body_of(request)
        return await run_in_threadpool(service.finish_session, tenant, session_id)

    # -------------------------------------------------------------- models
    @app.post(f"{API}/create_model")
    async def create_model(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "create_model", rq.CreateModel, service.create_model)

    @app.post(f"{API}/get_info")
    async def get_info(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return service.get_info(tenant, await parse(request, rq.ModelRef))

    @app.post(f"{API}/forward_backward")
    async def forward_backward(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        try:
            body = await body_of(request)
        except UserError as exc:
            return service.failed(tenant, "forward_backward", exc)
        # Decoding a large batch takes a while: off the event loop, so polls keep flowing.
        return await run_in_threadpool(service.forward_backward, tenant, body)

    @app.post(f"{API}/optim_step")
    async def optim_step(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "optim_step", rq.OptimStep, service.optim_step)

    @app.post(f"{API}/save_weights")
    async def save_weights(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "save_weights", rq.SaveWeights, service.save_weights)

    @app.post(f"{API}/save_weights_for_sampler")
    async def save_weights_for_sampler(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "save_weights_for_sampler", rq.SaveWeightsForSampler,
                            service.save_weights_for_sampler)

    @app.post(f"{API}/save_weights_external")
    async def save_weights_external(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "save_weights_external", rq.SaveWeightsExternal,
                            service.save_weights_external)

    @app.post(f"{API}/load_weights")
    async def load_weights(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "load_weights", rq.LoadWeights, service.load_weights)

    # ------------------------------------------------------------ sampling
    @app.post(f"{API}/create_sampling_session")
    async def create_sampling_session(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return service.create_sampling_session(tenant, await parse(request, rq.CreateSamplingSession))

    @app.get(f"{API}/samplers/{{sampler_id}}")
    async def get_sampler(sampler_id: str, tenant: str = Tenant) -> dict[str, Any]:
        return service.get_sampler(tenant, sampler_id)

    @app.post(f"{API}/asample")
    async def asample(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await future(request, tenant, "sample", rq.Sample, service.sample)

    # ------------------------------------------------------------- futures
    @app.post(f"{API}/retrieve_future")
    async def retrieve_future(request: Request, tenant: str = Tenant) -> Response:
        req = await parse(request, rq.RetrieveFuture)
        record = service.futures.get(tenant, req.request_id)
        if record is None:
            return JSONResponse({"error": f"unknown request_id {req.request_id!r}: it expired or was never issued "
                                          "to this API key", "category": "user"})
        result = await service.futures.wait(record, service.config.poll_hold_seconds)
        if result is None:
            return JSONResponse({"type": "try_again", "request_id": req.request_id, "queue_state": "active"})
        if isinstance(result, ProtoResult):
            return Response(result.body, media_type=PROTO_CONTENT_TYPE)
        return JSONResponse(result.body)

    # ---------------------------------------------------- rest: checkpoints
    @app.get(f"{API}/training_runs")
    async def training_runs(limit: int = 20, offset: int = 0, tenant: str = Tenant) -> dict[str, Any]:
        return await run_in_threadpool(service.training_runs, tenant, _bounded(limit), max(offset, 0))

    @app.get(f"{API}/training_runs/{{model_id}}")
    async def training_run(model_id: str, tenant: str = Tenant) -> dict[str, Any]:
        return await run_in_threadpool(service.training_run, tenant, model_id)

    @app.get(f"{API}/training_runs/{{model_id}}/checkpoints")
    async def run_checkpoints(model_id: str, tenant: str = Tenant) -> dict[str, Any]:
        return await run_in_threadpool(service.checkpoints, tenant, model_id)

    @app.delete(f"{API}/training_runs/{{model_id}}/checkpoints/{{checkpoint_id:path}}")
    async def delete_checkpoint(model_id: str, checkpoint_id: str, tenant: str = Tenant) -> Response:
        await run_in_threadpool(service.delete_checkpoint, tenant, model_id, checkpoint_id)
        return Response(status_code=204)

    # The SDK puts the checkpoint id ("external_weights/<name>", with a slash) before a fixed suffix.
    @app.get(f"{API}/training_runs/{{model_id}}/checkpoints/{{checkpoint_id:path}}/external_weights_urls")
    async def external_weights_urls(model_id: str, checkpoint_id: str, request: Request,
                                    tenant: str = Tenant) -> dict[str, Any]:
        # The request's own base URL: the URLs then work through whatever address (port-forward,
        # ingress) the client used to reach this server.
        base_url = str(request.base_url).rstrip("/")
        return await run_in_threadpool(service.external_weights_urls, tenant, model_id, checkpoint_id, base_url)

    # No API key: the signature is the credential (see external.py).
    @app.get(f"{DOWNLOAD_PREFIX}/{{model_id}}/{{name}}/{{file_path:path}}")
    async def download_external_weights(model_id: str, name: str, file_path: str, tenant: str = "",
                                        created: str = "", expires: str | None = None,
                                        signature: str | None = None) -> FileResponse:
        grant = FileGrant(tenant, model_id, name, file_path, created, parse_expires(expires))
        path = await run_in_threadpool(service.external_weights_file, grant, signature)
        return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                            headers={"Cache-Control": "private, no-store"})

    @app.get(f"{API}/checkpoints")
    async def user_checkpoints(limit: int = 100, offset: int = 0, tenant: str = Tenant) -> dict[str, Any]:
        return await run_in_threadpool(service.checkpoints, tenant, None, _bounded(limit), max(offset, 0))

    @app.post(f"{API}/weights_info")
    async def weights_info(request: Request, tenant: str = Tenant) -> dict[str, Any]:
        return await run_in_threadpool(service.weights_info, tenant, await parse(request, rq.WeightsInfo))

    return app


def _bounded(limit: int) -> int:
    return min(max(limit, 1), 1000)


def _summary(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)


class _RequestMetrics:
    """Counts every HTTP request by route template and status class (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, service: TinkerService):
        self.app = app
        self.counter = service.metrics.requests

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
            self.counter.labels(getattr(route, "path", "unmatched"), f"{status // 100}xx").inc()

