"""The two tiers as one Serve application, and ``stream-server cluster``.

``build(settings, plan)`` returns the application: ``Decoder`` replicas (``DecoderReplica``, one model each,
routed by ``SessionAffinityRouter``) and ``Ingress`` replicas (the FastAPI app of the single process, built on
each replica by ``create_app`` with a ``RemoteDecoder``). ``serve run deploy/ray/serve_config.yaml`` imports
``app_builder``; ``stream-server cluster`` calls ``run``.

Autoscaling: decoders scale on ongoing requests per replica, which for this deployment is its queue depth plus
the batch running; ingress scales on ongoing requests, which for websockets is open sessions. Scale-down drains:
Serve stops routing to a replica, then waits ``graceful_shutdown_timeout_s`` for its requests (a decoder's queued
jobs; an ingress replica's open websockets, which would end only with that timeout: the app's lifespan runs after
it). So an ingress replica drains its sessions itself when Serve marks it stopping (``stopping.py``), and the
whole tier on ``stream-server cluster``'s SIGTERM (``drain.py``'s signal).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.config import AutoscalingConfig, RequestRouterConfig

from ..config import Settings
from . import drain
from .decoder import DecoderReplica
from .remote import RemoteDecoder
from .router import SessionAffinityRouter

log = logging.getLogger(__name__)
INGRESS_APP = "stream-server"
DECODERS_APP = "stream-server-decoders"
DECODER = "Decoder"
ROUTER = f"{SessionAffinityRouter.__module__}.{SessionAffinityRouter.__qualname__}"


@dataclass(frozen=True)
class ClusterPlan:
    decoders: int = 1  # decoder replicas (the minimum when autoscaling)
    max_decoders: int = 0  # > decoders: autoscale between them
    ingress: int = 1
    max_ingress: int = 0
    decoder_cpus: float = 1.0  # CPU cores reserved per decoder replica (its model threads)
    decoder_gpus: float = 0.0  # 1: one GPU per decoder replica
    ingress_cpus: float = 1.0
    sessions_per_ingress: int = 64  # ingress autoscaling target (ongoing requests = open sessions)
    queue_per_decoder: int = 32  # decoder autoscaling target (ongoing requests = queued + running jobs)
    drain_s: float = 30.0


def _scaling(low: int, high: int, target: int) -> dict[str, Any]:
    if high > low:
        config = AutoscalingConfig(min_replicas=low, max_replicas=high, target_ongoing_requests=target)
        return {"autoscaling_config": config}
    return {"num_replicas": low}


def _ingress_app(settings_json: str) -> Any:
    """Runs on each ingress replica: the single-process app with the decoder tier behind its Decoder seam."""
    from ..app import create_app

    settings = Settings.model_validate_json(settings_json)

    async def connect() -> RemoteDecoder:
        return await RemoteDecoder.connect(serve.get_deployment_handle(DECODER, app_name=DECODERS_APP))

    return create_app(settings, decoder_factory=connect, drain_signal=(drain.wait_for_drain, drain.report_drained))


def build(settings: Settings, plan: ClusterPlan) -> Any:
    settings_json = settings.model_dump_json()
    decoder = serve.deployment(
        name=DECODER,
        ray_actor_options={"num_cpus": plan.decoder_cpus, "num_gpus": plan.decoder_gpus},
        # never "busy" to Serve: the engine queues and batches; its own limit answers overloaded
        max_ongoing_requests=max(settings.max_queue, 1000),
        request_router_config=RequestRouterConfig.model_validate({"request_router_class": ROUTER}),
        graceful_shutdown_timeout_s=plan.drain_s,
        health_check_period_s=2.0,
        health_check_timeout_s=10.0,
        **_scaling(plan.decoders, plan.max_decoders, plan.queue_per_decoder),
    )(DecoderReplica)
    ingress = serve.deployment(
        name="Ingress",
        ray_actor_options={"num_cpus": plan.ingress_cpus},
        max_ongoing_requests=max(settings.max_sessions * 2, 100),
        # covers noticing the stop (stopping.POLL_S), the drain (shutdown_grace_s) and Serve's 2 s wait loop
        graceful_shutdown_timeout_s=plan.drain_s + settings.shutdown_grace_s,
        **_scaling(plan.ingress, plan.max_ingress, plan.sessions_per_ingress),
    )(serve.ingress(lambda: _ingress_app(settings_json))())
    return ingress.bind(), decoder.bind(settings_json)


def _split_args(args: dict[str, Any]) -> tuple[Settings, ClusterPlan]:
    args = dict(args)
    plan_fields = {k: args.pop(k) for k in list(args) if k in ClusterPlan.__dataclass_fields__}
    return Settings(**args), ClusterPlan(**plan_fields)


def decoders_builder(args: dict[str, Any]) -> Any:
    """``serve run`` entry point of the decoder application: ``args`` are Settings fields and ClusterPlan's."""
    return build(*_split_args(args))[1]


def ingress_builder(args: dict[str, Any]) -> Any:
    """``serve run`` entry point of the ingress application (deploy it after the decoders)."""
    return build(*_split_args(args))[0]


def run(argv: list[str]) -> None:
    """``stream-server cluster [--decoders N] [--ingress M] [--address ADDR] [server flags]``."""
    import ray

    parser = argparse.ArgumentParser(prog="stream-server cluster", add_help=True)
    parser.add_argument("--decoders", type=int, default=1)
    parser.add_argument("--max-decoders", type=int, default=0)
    parser.add_argument("--ingress", type=int, default=1)
    parser.add_argument("--max-ingress", type=int, default=0)
    parser.add_argument("--decoder-cpus", type=float, default=1.0)
    parser.add_argument("--decoder-gpus", type=float, default=0.0)
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    known, rest = parser.parse_known_args(argv)
    settings = Settings.from_cli(rest)
    plan = ClusterPlan(**{k: v for k, v in vars(known).items() if k in ClusterPlan.__dataclass_fields__})
    ray.init(address=known.address)
    signal_actor = drain.create()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    ingress, decoder = build(settings, plan)
    serve.run(decoder, name=DECODERS_APP, route_prefix=None)
    serve.run(ingress, name=INGRESS_APP, route_prefix="/")
    log.info("cluster serving on %s:%d: %s", settings.host, settings.port, plan)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    drain.drain(signal_actor, settings.shutdown_grace_s)
    serve.shutdown()  # type: ignore[no-untyped-call]  # Ray's API is unannotated
