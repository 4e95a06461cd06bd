"""An ingress replica that Serve itself removes drains its own sessions (``stream_server/cluster/stopping.py``), on
a real local Ray cluster: both tiers deployed from a Serve config as ``serve run deploy/ray/serve_config.yaml``
deploys them, two ingress replicas with live sessions on both, then the config redeployed with one ingress
replica mid-stream, then with a new version (every replica replaced). Every utterance the leaving replica's
sessions had spoken gets exactly one final, in order, then ``session.closed`` and close 1001; the surviving
replica's sessions are untouched; a client that reconnects is served."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
serve = pytest.importorskip("ray.serve")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from benchmarks.launch import free_port  # noqa: E402
from stream_server.cluster import stopping  # noqa: E402
from stream_server.cluster.app import DECODERS_APP, INGRESS_APP  # noqa: E402
from stream_server.errors import ShuttingDown  # noqa: E402
from tests.helpers import StreamResult, silence, stream_audio, synthesize, to_pcm16, wer  # noqa: E402

SENTENCES = [
    "Good morning everyone, please open the window before you leave.",
    "The weather will be cold and windy tomorrow afternoon.",
    "The train to the airport leaves every twenty minutes.",
    "Please bring your ticket and passport.",
]
SESSIONS = 6
PAUSE_S = 1.0
STAGGER_S = 0.25


def serve_config(port: int, ingress_replicas: int, **ingress_args: Any) -> ServeDeploySchema:
    """Both tiers as ``deploy/ray/serve_config.yaml`` lays them out (CPU, the embedded model). The ingress replica
    count is the config's ``deployments`` override, so changing it only scales the tier; changing ``ingress_args``
    makes a new version, which replaces every replica."""
    common = {"cpu_threads": 1, "drain_s": 10.0}
    return ServeDeploySchema.model_validate(
        {
            "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [
                {
                    "name": DECODERS_APP,
                    "route_prefix": None,
                    "import_path": "stream_server.cluster.app:decoders_builder",
                    "args": {**common, "decoders": 1},
                },
                {
                    "name": INGRESS_APP,
                    "route_prefix": "/",
                    "import_path": "stream_server.cluster.app:ingress_builder",
                    "args": {**common, "ingress": 2, **ingress_args},
                    "deployments": [{"name": "Ingress", "num_replicas": ingress_replicas}],
                },
            ],
        }
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    from ray.serve.context import _get_global_client

    port = free_port()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    client = _get_global_client()
    client.deploy_apps(serve_config(port, 2), _blocking=True)  # what `serve run <config>` does

    def deploy(replicas: int, **ingress_args: Any) -> None:
        client.deploy_apps(serve_config(port, replicas, **ingress_args))

    try:
        yield {"port": port, "url": f"ws://127.0.0.1:{port}", "deploy": deploy}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The four sentences with pauses (16 kHz), and each one's (start, end) in seconds."""
    parts, bounds, at = [], [], 0.0
    for text in SENTENCES:
        spoken = synthesize(text)
        bounds.append((at, at + len(spoken) / 16000))
        parts += [spoken, silence(PAUSE_S)]
        at += len(spoken) / 16000 + PAUSE_S
    return np.concatenate(parts), bounds


def ingress_actors() -> int:
    return sum("#Ingress#" in a["name"] for a in ray.util.list_named_actors(all_namespaces=True))


async def sessions_while(
    url: str, audio: np.ndarray, redeploy_at_s: float, sessions: int, redeploy: Any
) -> tuple[list[StreamResult], float]:
    """Stream ``audio`` in real time on ``sessions`` sessions, started one by one (so that Serve's proxy sees each
    and spreads them over the replicas); call ``redeploy`` when the last one is ``redeploy_at_s`` into it. Returns
    every session's result and when ``redeploy`` was called (monotonic)."""
    running = []
    for _ in range(sessions):
        running.append(asyncio.create_task(stream_audio(url, to_pcm16(audio), timeout_s=120)))
        await asyncio.sleep(STAGGER_S)
    await asyncio.sleep(redeploy_at_s - STAGGER_S)
    redeployed = time.monotonic()
    await asyncio.to_thread(redeploy)
    return await asyncio.gather(*running), redeployed


def was_drained(result: StreamResult) -> bool:
    closed = result.of("session.closed")
    return bool(closed) and closed[-1]["reason"] == ShuttingDown.code


def check_drained(result: StreamResult, bounds: list[tuple[float, float]], redeployed: float) -> tuple[int, float]:
    """A drained session: one final per utterance whose speech the server had received in full (by the
    ``audio_seconds`` of its ``session.closed``), in order and right, plus at most the one it was cut in; then
    ``session.closed`` and close 1001, mid-stream. Returns (utterances spoken, seconds from the redeploy to the
    session's close)."""
    closed = result.of("session.closed")[-1]
    received_s = float(closed["audio_seconds"])
    spoken = sum(end <= received_s for _, end in bounds)
    begun = sum(start < received_s for start, _ in bounds)
    finals = result.finals
    ids = [f["utterance_id"] for f in finals]
    assert ids == sorted(set(ids)), f"finals duplicated or out of order: {ids}"
    assert spoken <= len(finals) <= begun, (spoken, begun, finals)
    said = " ".join(f["text"] for f in finals[:spoken])
    assert wer(" ".join(SENTENCES[:spoken]), said) < 0.25, (spoken, finals)
    assert result.events[-1]["type"] == "session.closed", result.events[-3:]
    assert result.close_code == 1001, result.close_code
    # audio the client sent after the drain began is ignored, and it is told so, once
    unexpected = [e for e in result.of("error") if "began closing" not in e["message"]]
    assert not unexpected and len(result.of("error")) <= 1, result.of("error")
    assert received_s < bounds[-1][0], received_s  # cut mid-stream, before the last utterance
    return spoken, result.arrived_at[result.events.index(closed)] - redeployed


def check_reconnect(url: str) -> None:
    """A client that reconnects is served (by a replica that stays)."""
    again = asyncio.run(stream_audio(url, to_pcm16(np.concatenate([synthesize(SENTENCES[3]), silence(1.0)]))))
    assert wer(SENTENCES[3], again.text()) < 0.25 and again.close_code == 1000, again.events


def wait_for_ingress_actors(count: int) -> None:
    deadline = time.monotonic() + 60
    while ingress_actors() != count and time.monotonic() < deadline:  # a leaving replica goes once drained
        time.sleep(0.5)
    assert ingress_actors() == count


@pytest.mark.slow
def test_an_ingress_replica_that_serve_removes_drains_its_sessions(
    cluster: dict[str, Any], speech: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    audio, bounds = speech
    assert ingress_actors() == 2
    controller = ray.get_actor(stopping.CONTROLLER_NAME, namespace=stopping.CONTROLLER_NAMESPACE)
    began = time.perf_counter()
    for _ in range(10):  # what each ingress replica asks once a poll
        answer = ray.get(controller.get_serve_instance_details.remote())
    poll_ms = (time.perf_counter() - began) * 100

    # the second utterance spoken, its final not yet out: scale the ingress tier in from two replicas to one
    results, redeployed = asyncio.run(
        sessions_while(cluster["url"], audio, bounds[1][1] + 0.3, SESSIONS, lambda: cluster["deploy"](1))
    )
    drained = [r for r in results if was_drained(r)]
    untouched = [r for r in results if not was_drained(r)]
    assert drained, "no session was drained: the removed replica's sessions ran on as if it stayed"
    assert untouched, "every session was drained: the surviving replica's too, or all were on one replica"
    spoken, closed_after = zip(*[check_drained(r, bounds, redeployed) for r in drained])
    print(
        f"ingress 2 -> 1: {len(drained)} sessions drained, closed {min(closed_after):.2f}-{max(closed_after):.2f} s "
        f"after the redeploy, finals {[len(r.finals) for r in drained]} for {list(spoken)} utterances spoken; "
        f"{len(untouched)} untouched with {[len(r.finals) for r in untouched]} finals; a poll's controller call "
        f"{poll_ms:.1f} ms, {len(pickle.dumps(answer)) / 1000:.1f} KB"
    )
    assert min(spoken) >= 2  # the drain came after two utterances, as the redeploy did
    assert max(closed_after) < 8.0  # noticed within a poll, last finals delivered, closed: long before Serve's 25 s
    for result in untouched:
        assert not result.of("error") and result.close_code == 1000, result.events[-3:]
        assert len(result.finals) == len(SENTENCES), result.finals
        assert wer(" ".join(SENTENCES), result.text()) < 0.25, result.finals
    wait_for_ingress_actors(1)
    check_reconnect(cluster["url"])


@pytest.mark.slow
def test_a_new_version_drains_the_sessions_of_every_replica_it_replaces(
    cluster: dict[str, Any], speech: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    """A redeploy with new arguments is a new version: Serve starts a new replica and stops the old one, whose
    sessions drain as on a scale-down."""
    audio, bounds = speech
    cluster["deploy"](1)  # as the test above leaves it, whether or not it ran
    wait_for_ingress_actors(1)
    results, redeployed = asyncio.run(
        sessions_while(cluster["url"], audio, bounds[1][1] + 0.3, 2, lambda: cluster["deploy"](1, max_sessions=100))
    )
    assert all(was_drained(r) for r in results), [r.events[-2:] for r in results]
    spoken, closed_after = zip(*[check_drained(r, bounds, redeployed) for r in results])
    print(f"new version: sessions closed {[round(s, 2) for s in closed_after]} s after the redeploy, {spoken} spoken")
    assert min(spoken) >= 2
    wait_for_ingress_actors(1)
    check_reconnect(cluster["url"])
