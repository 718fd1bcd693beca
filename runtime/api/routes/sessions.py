"""Sessions: ``ServiceClient()`` opens one, heartbeats keep it alive, ``close()`` finishes it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from .. import requests as rq
from .plumbing import API, Service, Tenant, parse, read_body

router = APIRouter()


@router.post(f"{API}/create_session")
async def create_session(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.create_session(tenant, await parse(request, rq.CreateSession))


@router.post(f"{API}/session_heartbeat")
async def heartbeat(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.heartbeat(tenant, await parse(request, rq.SessionRef))


@router.post(f"{API}/sessions/{{session_id}}/finish")
async def finish(session_id: str, request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    await read_body(request)  # the finish reason: nothing here depends on it
    return await run_in_threadpool(service.finish_session, tenant, session_id)
