"""The server itself: health, readiness, Prometheus metrics, and what the SDK asks at start-up
(client config, dynamic config, telemetry, server capabilities)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .plumbing import API, Service, Tenant, read_body

router = APIRouter()


# /healthz, /readyz and /metrics need no key: probes and Prometheus scrape them.
@router.get("/healthz")
@router.get(f"{API}/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: Service) -> JSONResponse:
    ready = service.ready()
    return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(service: Service) -> Response:
    return Response(service.metrics_exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post(f"{API}/client/config")
async def client_config(service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.client_config()


@router.post(f"{API}/client/dynamic_config")
async def dynamic_config(tenant: Tenant) -> dict[str, Any]:
    return {}


@router.post(f"{API}/telemetry")
async def telemetry(request: Request, tenant: Tenant) -> dict[str, str]:
    await read_body(request)  # accepted and dropped: nothing leaves this server
    return {"status": "accepted"}


@router.get(f"{API}/get_server_capabilities")
async def capabilities(service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.capabilities()
