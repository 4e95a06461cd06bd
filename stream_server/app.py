"""``create_app``: assembles settings, the model backend, the engine and the transports.

The lifespan loads the model (unless a backend is passed in), starts the decode engine, and on shutdown
drains open sessions (finals delivered, ``session.closed`` with ``server_shutdown``) before stopping the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.staticfiles import StaticFiles

from .auth import ApiKeyAuth
from .config import Settings
from .decode.backend import DecodeBackend
from .decode.engine import DecodeEngine
from .decode.scheduler import BatchScheduler
from .errors import StreamServerError
from .metrics import Metrics
from .transport import http, ws

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings, backend: DecodeBackend | None = None) -> FastAPI:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal backend
        if backend is None:
            from .decode.whisper_ct2 import load_backend

            backend = await asyncio.to_thread(load_backend, settings)
        engine = DecodeEngine(backend, BatchScheduler(settings.max_batch_size, max_batch_audio_s=settings.max_batch_audio_s), settings.max_wait_ms,
                              settings.max_queue)
        engine.observers.append(metrics.on_batch)
        engine.start()
        app.state.engine = engine
        log.info("ready: model %s, max batch %d", backend.model_id, settings.max_batch_size)
        try:
            yield
        finally:
            await app.state.sessions.drain(settings.shutdown_grace_s)
            await engine.stop()

    app = FastAPI(title="stream-server", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.hooks = metrics
    app.state.auth = ApiKeyAuth(settings.all_api_keys())
    app.state.sessions = ws.SessionRegistry(settings.max_sessions)
    app.state.stream_defaults = ws.stream_defaults(settings)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        engine: DecodeEngine | None = getattr(request.app.state, "engine", None)
        if engine is None or not engine.alive:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "model": engine.backend.model_id})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status")
    async def status(request: Request) -> JSONResponse:
        engine: DecodeEngine = request.app.state.engine
        return JSONResponse({
            "model": engine.backend.model_id,
            "sessions": len(request.app.state.sessions.sessions),
            "scheduler": asdict(engine.stats()),
            "engine_busy": engine.busy,
        })

    @app.exception_handler(StreamServerError)
    async def on_stream_server_error(request: Request, exc: StreamServerError) -> Response:
        return http.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return http.validation_error_response(exc)

    app.include_router(http.router)
    app.add_api_websocket_route("/v1/listen", ws.listen)
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app
