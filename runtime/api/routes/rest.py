"""The SDK's ``RestClient``: training runs, checkpoints, external weights' signed download URLs
and the downloads themselves. These touch the store, not the engine: run off the event loop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from .. import requests as rq
from ..external import DOWNLOAD_PREFIX, FileGrant, parse_expires
from .plumbing import API, Service, Tenant, page_size, parse

router = APIRouter()


@router.get(f"{API}/training_runs")
async def training_runs(service: Service, tenant: Tenant, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    return await run_in_threadpool(service.training_runs, tenant, page_size(limit), max(offset, 0))


@router.get(f"{API}/training_runs/{{model_id}}")
async def training_run(model_id: str, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await run_in_threadpool(service.training_run, tenant, model_id)


@router.get(f"{API}/training_runs/{{model_id}}/checkpoints")
async def run_checkpoints(model_id: str, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await run_in_threadpool(service.checkpoints, tenant, model_id)


@router.delete(f"{API}/training_runs/{{model_id}}/checkpoints/{{checkpoint_id:path}}")
async def delete_checkpoint(model_id: str, checkpoint_id: str, service: Service, tenant: Tenant) -> Response:
    await run_in_threadpool(service.delete_checkpoint, tenant, model_id, checkpoint_id)
    return Response(status_code=204)


# The SDK puts the checkpoint id ("external_weights/<name>", with a slash) before a fixed suffix.
@router.get(f"{API}/training_runs/{{model_id}}/checkpoints/{{checkpoint_id:path}}/external_weights_urls")
async def external_weights_urls(model_id: str, checkpoint_id: str, request: Request, service: Service,
                                tenant: Tenant) -> dict[str, Any]:
    # The request's own base URL: the URLs then work through whatever address (port-forward,
    # ingress) the client used to reach this server.
    base_url = str(request.base_url).rstrip("/")
    return await run_in_threadpool(service.external_weights_urls, tenant, model_id, checkpoint_id, base_url)


# No API key: the signature is the credential (see external.py).
@router.get(f"{DOWNLOAD_PREFIX}/{{model_id}}/{{name}}/{{file_path:path}}")
async def download_external_weights(model_id: str, name: str, file_path: str, service: Service,
                                    tenant: str = "", created: str = "", expires: str | None = None,
                                    signature: str | None = None) -> FileResponse:
    grant = FileGrant(tenant, model_id, name, file_path, created, parse_expires(expires))
    path = await run_in_threadpool(service.external_weights_file, grant, signature)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                        headers={"Cache-Control": "private, no-store"})


@router.get(f"{API}/checkpoints")
async def user_checkpoints(service: Service, tenant: Tenant, limit: int = 100,
                           offset: int = 0) -> dict[str, Any]:
    return await run_in_threadpool(service.checkpoints, tenant, None, page_size(limit), max(offset, 0))


@router.post(f"{API}/weights_info")
async def weights_info(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await run_in_threadpool(service.weights_info, tenant, await parse(request, rq.WeightsInfo))
