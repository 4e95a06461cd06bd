"""``create_app``: the composition root. Builds ``Services`` from the settings, mounts the routes, and in the
lifespan loads the model (unless a backend is passed in), starts the decode engine, and on shutdown drains open
sessions (finals delivered, then closed with ``server_shutdown``) before stopping the engine.

With API keys configured every route needs one except ``/healthz`` (liveness probes carry no credentials) and
the static caption page (a browser cannot send a header when it navigates; the page itself asks for the key
and sends it on every request and on the websocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from .auth import ApiKeyAuth
from .config import Settings
from .decode.backend import DecodeBackend
from .decode.engine import DecodeEngine
from .decode.scheduler import BatchScheduler
from .metrics import Metrics
from .transport import http, ops
from .transport.dialect_routes import mount_dialect_routes
from .transport.dialects.native import NativeDialect
from .transport.engine_decoder import EngineDecoder
from .transport.errors import install_error_handlers
from .transport.limits import StreamLimits
from .transport.registry import SessionRegistry
from .transport.route import dialect_route
from .transport.services import DecoderSlot, Services
from .transport.session_api import session_factory, session_policy, stream_defaults

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def build_services(settings: Settings) -> Services:
    policy = session_policy(settings)
    return Services(
        settings=settings,
        decoder=DecoderSlot(settings.resolved_model_id()),
        registry=SessionRegistry(settings.max_sessions),
        auth=ApiKeyAuth(settings.all_api_keys()),
        metrics=Metrics(),
        stream_defaults=stream_defaults(settings),
        session_policy=policy,
        session_factory=session_factory(policy),
        limits=StreamLimits.from_settings(settings),
    )


def create_app(settings: Settings, backend: DecodeBackend | None = None) -> FastAPI:
    svc = build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # numpy's BLAS runs one thread per core beside CTranslate2's; one is enough (see docs/decisions.md#blas)
        blas_limit = threadpool_limits(1, user_api="blas")  # held: the limit lasts while the app runs
        engine = await _start_engine(settings, backend, svc.metrics)
        svc.decoder.attach(EngineDecoder(engine), busy=lambda: engine.busy)
        try:
            yield
        finally:
            if not svc.registry.draining:  # the server's SIGTERM hook drained them already
                await svc.registry.drain(settings.shutdown_grace_s)
            await engine.stop()
            svc.decoder.detach()
            await call_events.aclose()
            blas_limit.restore_original_limits()

    # the interactive docs would be open pages beside keyed routes: served only on a server without keys
    no_docs: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None} if svc.auth.enabled else {}
    app = FastAPI(title="stream-server", version="0.1.0", lifespan=lifespan, **no_docs)
    app.state.services = svc
    install_error_handlers(app, svc.metrics)
    app.include_router(ops.health_router)
    app.include_router(ops.router)
    app.include_router(http.router)
    app.add_api_websocket_route("/v1/listen", dialect_route(NativeDialect))
    call_events = mount_dialect_routes(app, settings, svc.auth)
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app


async def _start_engine(settings: Settings, backend: DecodeBackend | None, metrics: Metrics) -> DecodeEngine:
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
    scheduler = BatchScheduler(settings.max_batch_size, max_batch_audio_s=settings.resolved_max_batch_audio_s(device))
    engine = DecodeEngine(
        model, scheduler, settings.max_wait_ms, settings.max_queue, extras_max_load=settings.extras_max_load
    )
    engine.observers.append(metrics.on_batch)
    metrics.watch_queue_depth(lambda: engine.scheduler.queue_depth)
    engine.start()
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
    return engine
