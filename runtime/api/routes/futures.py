"""``retrieve_future``: the long poll every future-returning call is followed by."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from .. import requests as rq
from ..futures import ProtoResult
from ..wire import PROTO_CONTENT_TYPE
from .plumbing import API, Service, Tenant, parse

router = APIRouter()


@router.post(f"{API}/retrieve_future")
async def retrieve_future(request: Request, service: Service, tenant: Tenant) -> Response:
    req = await parse(request, rq.RetrieveFuture)
    result = await service.retrieve(tenant, req.request_id)
    if result is None:  # still pending: the SDK polls again at once
        return JSONResponse({"type": "try_again", "request_id": req.request_id, "queue_state": "active"})
    if isinstance(result, ProtoResult):
        return Response(result.body, media_type=PROTO_CONTENT_TYPE)
    return JSONResponse(result.body)  # a failed future too: HTTP 200 with {"error", "category"}
