"""Training clients: creating a model, forward_backward, optim_step, saving and loading weights.
Each call but ``get_info`` answers a future."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...errors import UserError
from .. import requests as rq
from .plumbing import API, Service, Tenant, as_future, parse, read_body

router = APIRouter()


@router.post(f"{API}/create_model")
async def create_model(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "create_model", rq.CreateModel, service.create_model)


@router.post(f"{API}/get_info")
async def get_info(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.get_info(tenant, await parse(request, rq.ModelRef))


@router.post(f"{API}/forward_backward")
async def forward_backward(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    try:
        body = await read_body(request)
    except UserError as exc:
        return service.failed(tenant, "forward_backward", exc)
    # Decoding a large batch takes a while: off the event loop, so polls keep flowing.
    return await run_in_threadpool(service.forward_backward, tenant, body)


@router.post(f"{API}/optim_step")
async def optim_step(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "optim_step", rq.OptimStep, service.optim_step)


@router.post(f"{API}/save_weights")
async def save_weights(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "save_weights", rq.SaveWeights, service.save_weights)


@router.post(f"{API}/save_weights_for_sampler")
async def save_weights_for_sampler(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "save_weights_for_sampler", rq.SaveWeightsForSampler,
                           service.save_weights_for_sampler)


@router.post(f"{API}/save_weights_external")
async def save_weights_external(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "save_weights_external", rq.SaveWeightsExternal,
                           service.save_weights_external)


@router.post(f"{API}/load_weights")
async def load_weights(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "load_weights", rq.LoadWeights, service.load_weights)
