"""Sampling clients: sampling sessions and ``asample`` (a future)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .. import requests as rq
from .plumbing import API, Service, Tenant, as_future, parse

router = APIRouter()


@router.post(f"{API}/create_sampling_session")
async def create_sampling_session(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.create_sampling_session(tenant, await parse(request, rq.CreateSamplingSession))


@router.get(f"{API}/samplers/{{sampler_id}}")
async def get_sampler(sampler_id: str, service: Service, tenant: Tenant) -> dict[str, Any]:
    return service.get_sampler(tenant, sampler_id)


@router.post(f"{API}/asample")
async def asample(request: Request, service: Service, tenant: Tenant) -> dict[str, Any]:
    return await as_future(request, tenant, "sample", rq.Sample, service.sample)
