"""Operations routes: ``/healthz`` (liveness, open), ``/readyz``, ``/metrics`` and ``/v1/status`` (keyed when
API keys are configured)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .services import require_api_key, services

health_router = APIRouter()
router = APIRouter(dependencies=[Depends(require_api_key)])


@health_router.get("/healthz", include_in_schema=False)
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    decoder = services(request).decoder
    if not decoder.alive:
        return JSONResponse({"ready": False}, status_code=503)
    return JSONResponse({"ready": True, "model": decoder.model_id})


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/status")
async def status(request: Request) -> JSONResponse:
    svc = services(request)
    return JSONResponse(
        {
            "model": svc.decoder.model_id,
            **svc.registry.snapshot(),
            "scheduler": asdict(svc.decoder.stats()),
            "engine_busy": svc.decoder.busy,
        }
    )
