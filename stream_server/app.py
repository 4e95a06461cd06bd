"""``create_app``: assembles settings, the model backend, the engine and the transports.

The lifespan loads the model (unless a backend is passed in), starts the decode engine, and on shutdown
drains open sessions (finals delivered, ``session.closed`` with ``server_shutdown``) before stopping the engine.

With API keys configured every route needs one except ``/healthz`` (liveness probes carry no credentials) and
the static caption page (a browser cannot send a header when it navigates; the page itself asks for the key
and sends it on every request and on the websocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from .auth import ApiKeyAuth, require_api_key
from .config import Settings
from .decode.backend import DecodeBackend
from .decode.engine import DecodeEngine
from .decode.scheduler import BatchScheduler
from .errors import StreamServerError
from .metrics import Metrics
from .transport import http, ws
from .transport.sessions import SessionRegistry, StreamLimits

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: Settings,
    backend: DecodeBackend | None = None,
    decoder_factory: Callable[[], Awaitable[Any]] | None = None,
) -> FastAPI:
    """``backend``: a model backend to run in this process (default: load the configured model);
    ``decoder_factory``: decode elsewhere instead (the cluster's ingress tier passes a ``RemoteDecoder``)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # numpy's BLAS (the mel filterbank product in every feature extraction) runs one thread per core and
        # leaves them spinning after each call, beside CTranslate2's threads. One thread: on 2 cores the server
        # went from 1.5 to 1.0 cores at 8 and 16 streams; on a 16-core GPU machine from 13.9 to 1.0 at 64
        # streams, and it held twice the streams (that run also held OpenMP to one thread; README, GPU results).
        blas_limit = threadpool_limits(1, user_api="blas")  # held: the limit lasts while the app runs
        if decoder_factory is not None:
            remote = await decoder_factory()
            app.state.engine = remote
            log.info("ready: model %s on the decoder tier", remote.model_id)
            try:
                yield
            finally:
                if not app.state.sessions.draining:
                    await app.state.sessions.drain(settings.shutdown_grace_s)
                await remote.stop()
                blas_limit.restore_original_limits()
            return
        model = backend
        if model is None:
            from .decode.whisper_ct2 import load_backend

            model = await asyncio.to_thread(load_backend, settings)
        # the device a backend really runs on ("auto" resolved at load); an injected test backend counts as CPU
        device = getattr(model, "device", "cpu")
        if settings.fail_decode_marker:
            from .faults import FaultInjectingBackend

            log.warning("TEST ONLY fault injection on: batches with %r in a prompt fail", settings.fail_decode_marker)
            model = FaultInjectingBackend(model, settings.fail_decode_marker)
        scheduler = BatchScheduler(
            settings.max_batch_size, max_batch_audio_s=settings.resolved_max_batch_audio_s(device)
        )
        engine = DecodeEngine(
            model, scheduler, settings.max_wait_ms, settings.max_queue, extras_max_load=settings.extras_max_load
        )
        engine.observers.append(metrics.on_batch)
        metrics.watch_queue_depth(lambda: engine.scheduler.queue_depth)
        engine.start()
        app.state.engine = engine
        audio_cap = f"{scheduler.max_batch_audio_s:g} s" if scheduler.max_batch_audio_s else "no cap"
        log.info(
            "ready: model %s on %s, max batch %d (audio: %s); finals while not busy: %g s of context, beam %d",
            model.model_id,
            device,
            settings.max_batch_size,
            audio_cap,
            settings.final_context_s,
            settings.idle_final_beam_size or settings.final_beam_size,
        )
        try:
            yield
        finally:
            if not app.state.sessions.draining:  # the CLI's DrainingServer drained them already
                await app.state.sessions.drain(settings.shutdown_grace_s)
            await engine.stop()
            blas_limit.restore_original_limits()

    auth = ApiKeyAuth(settings.all_api_keys())
    # the interactive docs would be open pages beside keyed routes: served only on a server without keys
    no_docs: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None} if auth.enabled else {}
    app = FastAPI(title="stream-server", version="0.1.0", lifespan=lifespan, **no_docs)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.hooks = metrics
    app.state.auth = auth
    app.state.sessions = SessionRegistry(settings.max_sessions)
    app.state.stream_defaults = ws.stream_defaults(settings)
    app.state.stream_limits = StreamLimits.from_settings(settings)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    ops = APIRouter(dependencies=[Depends(require_api_key)])

    @ops.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        engine: DecodeEngine | None = getattr(request.app.state, "engine", None)
        if engine is None or not engine.alive:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "model": engine.backend.model_id})

    @ops.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @ops.get("/v1/status")
    async def status(request: Request) -> JSONResponse:
        engine: DecodeEngine = request.app.state.engine
        body: dict[str, Any] = {
            "model": engine.backend.model_id,
            **request.app.state.sessions.snapshot(),
            "scheduler": asdict(engine.stats()),
            "engine_busy": engine.busy,
        }
        loads = getattr(engine, "loads", None)
        if loads is not None:  # the cluster's decoder tier: each replica's load, and the hop's cost
            body["decoders"] = [asdict(load) for load in await loads()]
            body["hop"] = engine.hop_summary()
        return JSONResponse(body)

    @app.exception_handler(StreamServerError)
    async def on_stream_server_error(request: Request, exc: StreamServerError) -> Response:
        metrics.on_error("http", exc.code)
        return http.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        metrics.on_error("http", "invalid_parameter")
        return http.validation_error_response(exc)

    app.include_router(ops)
    app.include_router(http.router)
    app.add_api_websocket_route("/v1/listen", ws.listen)
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app
