"""Operations routes: ``/healthz`` (liveness, open), ``/readyz``, ``/metrics`` and ``/v1/status`` (keyed when
API keys are configured)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

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
    svc = services(request)
    text = generate_latest(svc.metrics.registry)
    tier = await svc.decoder.tier_status()
    if tier:  # a decoder tier elsewhere: each replica's load, labelled by replica
        text += _replica_gauges(tier.get("decoders", []))
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def _replica_gauges(loads: list[dict[str, Any]]) -> bytes:
    lines = []
    for name, field, help_text in (
        ("decoder_replica_queue_depth", "queue_depth", "Jobs queued on a decoder replica"),
        ("decoder_replica_owners", "owners", "Sessions and uploads with jobs on a decoder replica"),
        ("decoder_replica_items_total", "items", "Jobs decoded by a decoder replica"),
        ("decoder_replica_batches_total", "batches", "Batches run by a decoder replica"),
    ):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{replica="{load["replica"]}"}} {load[field]}' for load in loads]
    return ("\n".join(lines) + "\n").encode()


@router.get("/v1/status")
async def status(request: Request) -> JSONResponse:
    svc = services(request)
    return JSONResponse(
        {
            "model": svc.decoder.model_id,
            **svc.registry.snapshot(),
            "scheduler": asdict(svc.decoder.stats()),
            "engine_busy": svc.decoder.busy,
            **await svc.decoder.tier_status(),
        }
    )
