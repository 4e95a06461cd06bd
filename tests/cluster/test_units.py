"""The cluster tier's pieces without a running cluster: the arrival-order guard of a decoder replica, the session
affinity router's placement (fake replicas and requests carry only what Serve hands the router), and the Serve
config under ``deploy/ray`` against the installed Ray's own schema. The same paths run for real in
``test_cluster.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from stream_server.cluster import router  # noqa: E402
from stream_server.cluster.app import decoders_builder, ingress_builder  # noqa: E402
from stream_server.cluster.router import SessionAffinityRouter  # noqa: E402
from stream_server.cluster.wire import ArrivalOrder  # noqa: E402
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve_config.yaml"


def job(kind: JobKind, utterance: int, owner: str = "s1") -> DecodeJob:
    key = None if kind is JobKind.OFFLINE else (owner, 0, utterance)
    return DecodeJob(owner=owner, kind=kind, audio=np.zeros(160, np.float32), options=DecodeOptions(), stream_key=key)


def test_a_job_arriving_after_a_newer_job_of_its_utterance_is_overtaken() -> None:
    order = ArrivalOrder()
    partial, final = job(JobKind.PARTIAL, 1), job(JobKind.FINAL, 1)  # the session's order: partial, then final
    assert not order.overtaken(final)  # the final came first (both waited for a replica; Serve picked this order)
    assert order.overtaken(partial)  # the partial is answered superseded; the final stays
    assert not order.overtaken(final)  # a failover's re-send of the same job is not overtaken
    assert not order.overtaken(job(JobKind.PARTIAL, 2))  # another utterance: its own order
    later = job(JobKind.PARTIAL, 1, owner="s2")
    assert not order.overtaken(later) and not order.overtaken(job(JobKind.FINAL, 1))  # other session, same index
    assert not order.overtaken(job(JobKind.OFFLINE, 0)) and not order.overtaken(job(JobKind.OFFLINE, 0))


def test_arrival_order_remembers_a_bounded_number_of_utterances() -> None:
    order = ArrivalOrder(kept=2)
    old = job(JobKind.PARTIAL, 1)
    newer = job(JobKind.PARTIAL, 1)
    assert not order.overtaken(newer)
    for utterance in (2, 3):
        assert not order.overtaken(job(JobKind.PARTIAL, utterance))
    assert not order.overtaken(old)  # utterance 1 was forgotten


@dataclass
class FakeReplica:
    replica_id: str
    routing_stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeContext:
    should_backoff: bool = False


@dataclass
class FakeMetadata:
    multiplexed_model_id: str


@dataclass
class FakePending:
    metadata: FakeMetadata
    routing_context: FakeContext = field(default_factory=FakeContext)


def choose(affinity: SessionAffinityRouter, replicas: list[FakeReplica], owner: str) -> tuple[str, bool]:
    import asyncio

    pending = FakePending(FakeMetadata(owner))
    ranks = asyncio.run(affinity.choose_replicas(replicas, pending))  # type: ignore[arg-type]
    assert len(ranks) == 1 and len(ranks[0]) == 1, ranks
    return str(ranks[0][0].replica_id), pending.routing_context.should_backoff


def test_router_places_by_least_load_keeps_owners_and_replaces_those_of_a_replica_that_left() -> None:
    affinity = SessionAffinityRouter.__new__(SessionAffinityRouter)  # only its own state: Serve's is not used
    affinity.initialize_state()
    a, b, c = FakeReplica("a"), FakeReplica("b", {"queue_depth": 5}), FakeReplica("c")
    placed = {owner: choose(affinity, [a, b], owner) for owner in ("s1", "s2", "s3")}
    assert [replica for replica, _ in placed.values()] == ["a", "b", "a"]  # fewest owners, then shortest queue
    assert all(backoff for _, backoff in placed.values())  # a retry after a failed probe backs off, never spins
    assert choose(affinity, [a, b], "s2")[0] == "b"  # sticky
    # "a" leaves (scale-down, redeploy): its owners are forgotten at once and placed again by the same rule
    assert choose(affinity, [b, c], "s2")[0] == "b"
    assert affinity._counts == {"b": 1}
    assert choose(affinity, [b, c], "s1")[0] == "c"
    assert choose(affinity, [b, c], "s3")[0] == "c"  # one owner each: the shorter queue
    router.release("s2")
    assert choose(affinity, [b, c], "s4")[0] == "b"  # s2's place no longer counts


def test_the_serve_config_is_valid_for_the_installed_ray_and_autoscales_each_tier() -> None:
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert [app.name for app in schema.applications] == ["stream-server-decoders", "stream-server"]
    builders = {"stream-server-decoders": decoders_builder, "stream-server": ingress_builder}
    scaling = {}
    for app in config["applications"]:
        deployment = builders[app["name"]](app["args"])._bound_deployment  # builds the real deployment options
        scaling[deployment.name] = deployment._deployment_config
    decoder, ingress = scaling["Decoder"], scaling["Ingress"]
    # decoders scale on ongoing requests per replica (= queued + running jobs), ingress on open sessions
    assert (decoder.autoscaling_config.min_replicas, decoder.autoscaling_config.max_replicas) == (1, 4)
    assert decoder.autoscaling_config.target_ongoing_requests == 32
    assert (ingress.autoscaling_config.min_replicas, ingress.autoscaling_config.max_replicas) == (2, 8)
    assert ingress.autoscaling_config.target_ongoing_requests == 64
    assert decoder.max_ongoing_requests >= 1000  # never "busy" to Serve: the engine queues and batches
    assert decoder.graceful_shutdown_timeout_s > decoder.graceful_shutdown_wait_loop_s  # a drain has time to run
