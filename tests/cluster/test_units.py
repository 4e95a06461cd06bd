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

from stream_server.cluster import releases, stopping  # noqa: E402
from stream_server.cluster.app import decoders_builder, ingress_builder  # noqa: E402
from stream_server.cluster.remote import RemoteDecoder  # noqa: E402
from stream_server.cluster.router import SessionAffinityRouter  # noqa: E402
from stream_server.cluster.wire import ArrivalOrder, DecoderInfo, OwnerTable, WireJob, WireOutcome  # noqa: E402
from stream_server.config import Settings  # noqa: E402
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve_config.yaml"
RAYSERVICE = CONFIG.parents[1] / "kubernetes" / "rayservice.yaml"


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
    releases.release("s2")
    assert choose(affinity, [b, c], "s4")[0] == "b"  # s2's place no longer counts


def new_router() -> SessionAffinityRouter:
    affinity = SessionAffinityRouter.__new__(SessionAffinityRouter)  # only its own state: Serve's is not used
    affinity.initialize_state()
    return affinity


def counted(affinity: SessionAffinityRouter) -> dict[str, int]:
    """The router's per-replica counts, checked against its placements: each owner counts on one replica."""
    by_placement: dict[str, int] = {}
    for replica_id in affinity._placed.values():
        by_placement[str(replica_id)] = by_placement.get(str(replica_id), 0) + 1
    assert {str(r): n for r, n in affinity._counts.items()} == by_placement
    return by_placement


def test_owners_of_a_dead_replica_move_and_every_owner_leaves_when_released() -> None:
    affinity = new_router()
    a, b = FakeReplica("a"), FakeReplica("b")
    for owner in ("s1", "s2", "s3", "s4"):
        choose(affinity, [a, b], owner)
    assert counted(affinity) == {"a": 2, "b": 2}
    # "a" dies: its owners stop counting on it, and each counts on the replica that takes its next job
    assert choose(affinity, [b], "s1")[0] == "b"
    assert counted(affinity) == {"b": 3}
    replacement = FakeReplica("a2")
    assert choose(affinity, [b, replacement], "s3")[0] == "a2"
    assert counted(affinity) == {"b": 3, "a2": 1}
    for owner in ("s1", "s2", "s4"):  # their sessions end
        releases.release(owner)
    assert choose(affinity, [b, replacement], "s5")[0] == "b"  # the survivor holds nothing any more
    assert counted(affinity) == {"a2": 1, "b": 1}
    # a call of a released owner that Serve routes late goes somewhere, and places nobody
    choose(affinity, [b, replacement], "s1")
    assert counted(affinity) == {"a2": 1, "b": 1} and "s1" not in affinity._placed
    for owner in ("s3", "s5"):
        releases.release(owner)
    choose(affinity, [b, replacement], "")  # a call without an owner (a broadcast) drains the releases too
    assert counted(affinity) == {}


def test_a_release_reaches_every_router_of_the_process() -> None:
    first, second = new_router(), new_router()  # e.g. two handles to the decoders in one ingress process
    replicas = [FakeReplica("a"), FakeReplica("b")]
    choose(first, replicas, "x")
    choose(second, replicas, "x")
    releases.release("x")
    choose(first, replicas, "y")
    choose(second, replicas, "y")
    assert counted(first) == counted(second) == {"a": 1}


def test_ties_go_by_the_decoders_own_owner_counts_then_queue_depth() -> None:
    """Another ingress replica's owners show only in the decoders' routing stats."""
    affinity = new_router()
    crowded = FakeReplica("a", {"owners": 3, "queue_depth": 0})
    queued = FakeReplica("b", {"owners": 0, "queue_depth": 5})
    assert choose(affinity, [crowded, queued], "s1")[0] == "b"
    assert choose(affinity, [crowded, queued], "s2")[0] == "a"  # this router's own count comes first


def test_owner_table_counts_an_owner_until_released_and_refuses_its_late_jobs() -> None:
    table = OwnerTable(forget_after_s=10.0, kept=2)
    assert table.arrived("s1", 0.0) and table.arrived("s1", 1.0) and table.arrived("s2", 2.0)
    assert len(table) == 2
    table.release("s1")
    assert len(table) == 1 and not table.arrived("s1", 3.0)  # sent before the release: nobody waits for it
    assert table.arrived("s3", 13.0) and len(table) == 1  # s2 had no job for 11 s: forgotten
    table.release("s3")
    table.release("s4")
    assert table.arrived("s1", 14.0)  # only the last two releases are remembered


SHIPPED_ROUTER = """
import asyncio, sys
from dataclasses import dataclass, field
from ray import cloudpickle
from stream_server.cluster import releases, router

@dataclass
class Replica:
    replica_id: str
    routing_stats: dict = field(default_factory=dict)

@dataclass
class Meta:
    multiplexed_model_id: str

@dataclass
class Context:
    should_backoff: bool = False

@dataclass
class Pending:
    metadata: Meta
    routing_context: Context = field(default_factory=Context)

shipped = cloudpickle.loads(open(sys.argv[1], "rb").read())
assert shipped is not router.SessionAffinityRouter  # a copy, with its own module globals
affinity = shipped.__new__(shipped)
affinity.initialize_state()
replicas = [Replica("a"), Replica("b")]
for owner in ("x", "y", "z"):
    asyncio.run(affinity.choose_replicas(replicas, Pending(Meta(owner))))
releases.release("x")  # as RemoteDecoder calls it: the module imported by name
releases.release("y")
asyncio.run(affinity.choose_replicas(replicas, Pending(Meta(""))))
print(sorted(str(r) for r in affinity._placed.values()), dict(affinity._counts))
"""


def test_a_release_reaches_the_router_class_as_serve_ships_it_to_an_ingress_process(tmp_path: Path) -> None:
    """Serve pickles the router's module by value: the class an ingress process runs has its own copy of that
    module's globals, so releases must travel through a module both sides import by name."""
    import subprocess
    import sys

    from ray.serve.config import RequestRouterConfig

    from stream_server.cluster.app import ROUTER

    shipped = tmp_path / "router.pkl"
    config = RequestRouterConfig.model_validate({"request_router_class": ROUTER})
    shipped.write_bytes(config.get_serialized_request_router_cls() or b"")
    cwd = Path(__file__).resolve().parents[2]  # ``-c``: this checkout's package first on the path
    done = subprocess.run(
        [sys.executable, "-c", SHIPPED_ROUTER, str(shipped)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['a'] {'a': 1}", done.stdout  # only z is left, on a


class FakeHandle:
    """A Serve handle to the decoders that answers at once and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.owner = ""

    def options(self, multiplexed_model_id: str) -> FakeHandle:
        self.owner = multiplexed_model_id
        return self

    @property
    def decode(self) -> FakeHandle:
        return self

    @property
    def cancel(self) -> FakeHandle:
        self.calls.append(("cancel", self.owner))
        return self

    def remote(self, wire: WireJob | str) -> Any:
        import asyncio

        if isinstance(wire, WireJob):
            self.calls.append(("decode", wire.job.owner))
            return asyncio.sleep(0, WireOutcome(error_code="overloaded", error_message="full"))
        return asyncio.sleep(0, 0)


def test_remote_decoder_releases_an_owner_that_sent_work_and_sends_nothing_for_one_that_did_not() -> None:
    import asyncio

    async def scenario() -> list[tuple[str, str]]:
        handle = FakeHandle()
        decoder = RemoteDecoder(handle, DecoderInfo("tiny.en", False, "cpu"))
        affinity = new_router()
        replicas = [FakeReplica("a"), FakeReplica("b")]
        await affinity.choose_replicas(replicas, FakePending(FakeMetadata("upload")))  # type: ignore[arg-type]
        future = decoder.submit(job(JobKind.OFFLINE, 0, owner="upload"))
        with pytest.raises(Exception, match="full"):
            await future
        decoder.cancel_owner("upload")
        assert decoder.cancel_owner("silent") == 0  # a session that never sent a job holds no place
        await asyncio.gather(*decoder._releases)
        assert counted(affinity) == {"a": 1}
        await affinity.choose_replicas(replicas, FakePending(FakeMetadata("next")))  # type: ignore[arg-type]
        assert counted(affinity) == {"a": 1}  # the upload's place was released: the next owner took it
        return handle.calls

    calls = asyncio.run(scenario())
    assert calls == [("decode", "upload"), ("cancel", "upload")]


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


@pytest.mark.parametrize("path", [CONFIG, RAYSERVICE], ids=["serve_config", "rayservice"])
def test_a_removed_ingress_replica_has_time_to_drain_under_either_deploy_config(path: Path) -> None:
    """Serve waits ``graceful_shutdown_timeout_s`` for a leaving ingress replica: it must cover noticing the stop
    (one poll), the drain (``shutdown_grace_s``) and Serve's own wait loop, which sees the sockets closed."""
    import yaml

    documents = list(yaml.safe_load_all(path.read_text()))
    (service,) = [d for d in documents if d.get("kind") == "RayService"] or documents
    config = yaml.safe_load(service["spec"]["serveConfigV2"]) if path == RAYSERVICE else service
    ServeDeploySchema.model_validate(config)
    (app,) = [app for app in config["applications"] if app["name"] == "stream-server"]
    ingress = ingress_builder(app["args"])._bound_deployment._deployment_config
    grace_s = Settings(**{k: v for k, v in app["args"].items() if k in Settings.model_fields}).shutdown_grace_s
    needed_s = stopping.POLL_S + grace_s + ingress.graceful_shutdown_wait_loop_s
    assert ingress.graceful_shutdown_timeout_s >= needed_s + 5.0, (ingress.graceful_shutdown_timeout_s, needed_s)
