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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from . import __version__
from .allocator import trim_when_idle
from .auth import ApiKeyAuth
from .config import Settings
from .decode.backend import DecodeBackend
from .decode.engine import DecodeEngine
from .decode.final_policy import FinalPolicy
from .decode.interface import Decoder
from .decode.scheduler import BatchScheduler
from .metrics import Metrics
from .transport import http, ops
from .transport.dialect_routes import mount_dialect_routes
from .transport.dialects.native import NativeDialect
from .transport.errors import install_error_handlers
from .transport.limits import StreamLimits
from .transport.origins import OriginPolicy
from .transport.registry import SessionRegistry
from .transport.route import dialect_route
from .transport.services import DecoderSlot, Services
from .transport.session_api import session_factory

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def build_services(settings: Settings) -> Services:
    policy = settings.session_policy()
    return Services(
        settings=settings,
        decoder=DecoderSlot(settings.resolved_model_id()),
        registry=SessionRegistry(settings.max_sessions),
        auth=ApiKeyAuth(settings.all_api_keys()),
        metrics=Metrics(),
        stream_defaults=settings.stream_params(),
        session_policy=policy,
        session_factory=session_factory(policy),
        limits=StreamLimits.from_settings(settings),
        origins=OriginPolicy(settings.allowed_origins),
    )


class StoppableDecoder(Decoder, Protocol):
    """A ``Decoder`` the app owns for its lifetime: the in-process engine, or the cluster's ``RemoteDecoder``."""

    @property
    def busy(self) -> bool: ...

    async def stop(self) -> None: ...


DrainSignal = tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]


async def _drain_on(signal: DrainSignal, svc: Services, settings: Settings) -> None:
    wait, report = signal
    await wait()
    await svc.registry.drain(settings.shutdown_grace_s)
    await report()


def create_app(
    settings: Settings,
    backend: DecodeBackend | None = None,
    decoder_factory: Callable[[], Awaitable[StoppableDecoder]] | None = None,
    drain_signal: DrainSignal | None = None,
) -> FastAPI:
    """The app. ``backend``: the model to run in this process (default: load the configured one);
    ``decoder_factory``: decode elsewhere instead (the cluster's ingress tier connects a ``RemoteDecoder``);
    ``drain_signal``: (wait, report) coroutines: when ``wait`` returns, open sessions are drained, then ``report``
    is awaited (the cluster's ingress replicas, whose lifespan Serve runs only after their websockets end)."""
    svc = build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # numpy's BLAS runs one thread per core beside CTranslate2's; one is enough (see docs/decisions.md#blas)
        blas_limit = threadpool_limits(1, user_api="blas")  # held: the limit lasts while the app runs
        if decoder_factory is not None:  # the decoder tier is elsewhere (the cluster's ingress replicas)
            decoder: StoppableDecoder = await decoder_factory()
            log.info("ready: model %s on the decoder tier", decoder.model_id)
        else:
            decoder = await _start_engine(settings, backend, svc.metrics)
        svc.decoder.attach(decoder, busy=lambda: decoder.busy)
        # memory freed by ended sessions goes back to the OS at rest (see docs/decisions.md#memory-plateau)
        trimmer = asyncio.create_task(
            trim_when_idle(lambda: len(svc.registry) == 0 and not decoder.busy, lambda: svc.registry.admitted)
        )
        drainer = None if drain_signal is None else asyncio.create_task(_drain_on(drain_signal, svc, settings))
        try:
            yield
        finally:
            trimmer.cancel()
            if drainer is not None:
                drainer.cancel()
            if not svc.registry.draining:  # the server's SIGTERM hook drained them already
                await svc.registry.drain(settings.shutdown_grace_s)
            await decoder.stop()
            svc.decoder.detach()
            await call_events.aclose()
            blas_limit.restore_original_limits()

    # the interactive docs would be open pages beside keyed routes: served only on a server without keys
    no_docs: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None} if svc.auth.enabled else {}
    app = FastAPI(title="stream-server", version=__version__, lifespan=lifespan, **no_docs)
    app.state.services = svc
    allow_origins, allow_origin_regex = svc.origins.cors_origins()
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allow_origins,
        allow_origin_regex=allow_origin_regex,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
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
        from .decode.loader import load_backend

        model = await asyncio.to_thread(load_backend, settings.backend_config())
    if settings.fail_decode_marker:
        from .faults import FaultInjectingBackend

        log.warning("TEST ONLY fault injection on: batches with %r in a prompt fail", settings.fail_decode_marker)
        model = FaultInjectingBackend(model, settings.fail_decode_marker)
    engine = build_engine(settings, model)
    engine.observers.append(metrics.on_batch)
    metrics.watch_queue_depth(lambda: engine.scheduler.queue_depth)
    engine.start()
    cap = engine.scheduler.max_batch_audio_s
    log.info(
        "ready: model %s on %s (%d worker(s)), max batch %d (audio: %s); finals while not busy: %g s of context, "
        "beam %d",
        model.model_id,
        getattr(model, "device", "cpu"),
        engine.workers,
        settings.max_batch_size,
        f"{cap:g} s" if cap else "no cap",
        settings.final_context_s,
        settings.final_beam_size,
    )
    return engine


def build_engine(settings: Settings, backend: DecodeBackend) -> DecodeEngine:
    """The engine over ``backend``: the single process's, and each cluster decoder replica's."""
    # the device a backend really runs on ("auto" resolved at load); an injected test backend counts as CPU
    device = getattr(backend, "device", "cpu")
    return DecodeEngine(
        backend,
        BatchScheduler(settings.scheduler_config(device)),
        FinalPolicy(settings.final_policy()),
    )
