"""An ingress replica that Serve itself removes drains its own sessions (``stream_server/cluster/stopping.py``), on
a real local Ray cluster: both tiers deployed from a Serve config as ``serve run deploy/ray/serve_config.yaml``
deploys them, two ingress replicas with live sessions on both, then the config redeployed with one ingress
replica mid-stream. Every utterance the leaving replica's sessions had spoken gets exactly one final, in order,
then ``session.closed`` and close 1001; the surviving replica's sessions are untouched; a client that reconnects
is served by the survivor."""

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


def serve_config(port: int, ingress_replicas: int) -> ServeDeploySchema:
    """Both tiers as ``deploy/ray/serve_config.yaml`` lays them out (CPU, the embedded model); the ingress replica
    count in the config's ``deployments`` override, so changing it only scales the tier (no new version)."""
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
                    "args": {**common, "ingress": 2},
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
    try:
        yield {"port": port, "deploy": lambda replicas: client.deploy_apps(serve_config(port, replicas))}
    finally:
        serve.shutdown()
        ray.shutdown()


def ingress_actors() -> int:
    return sum("#Ingress#" in a["name"] for a in ray.util.list_named_actors(all_namespaces=True))


def check_spoken_finals(result: StreamResult, bounds: list[tuple[float, float]]) -> int:
    """The finals of a drained session: one per utterance whose speech the server had received in full (by the
    ``audio_seconds`` of its ``session.closed``), in order and right, plus at most the one it was cut in. Returns
    how many utterances it had spoken."""
    received_s = float(result.of("session.closed")[-1]["audio_seconds"])
    spoken = sum(end <= received_s for _, end in bounds)
    begun = sum(start < received_s for start, _ in bounds)
    finals = result.finals
    ids = [f["utterance_id"] for f in finals]
    assert ids == sorted(set(ids)), f"finals duplicated or out of order: {ids}"
    assert spoken <= len(finals) <= begun, (spoken, begun, finals)
    said = " ".join(f["text"] for f in finals[:spoken])
    assert wer(" ".join(SENTENCES[:spoken]), said) < 0.25, (spoken, finals)
    return spoken


@pytest.mark.slow
def test_an_ingress_replica_that_serve_removes_drains_its_sessions(cluster: dict[str, Any]) -> None:
    port = cluster["port"]
    url = f"ws://127.0.0.1:{port}"
    parts, bounds, at = [], [], 0.0
    for text in SENTENCES:
        speech = synthesize(text)
        bounds.append((at, at + len(speech) / 16000))
        parts += [speech, silence(PAUSE_S)]
        at += len(speech) / 16000 + PAUSE_S
    audio = np.concatenate(parts)
    total_s = len(audio) / 16000
    assert ingress_actors() == 2
    controller = ray.get_actor(stopping.CONTROLLER_NAME, namespace=stopping.CONTROLLER_NAMESPACE)
    began = time.perf_counter()
    for _ in range(10):  # what each ingress replica asks once a poll
        answer = ray.get(controller.get_serve_instance_details.remote())
    poll_ms = (time.perf_counter() - began) * 100

    async def sessions_while_scaling_in() -> tuple[list[StreamResult], float, float]:
        running = []
        for _ in range(SESSIONS):  # one by one, so that Serve's proxy sees each and spreads them over both
            running.append(asyncio.create_task(stream_audio(url, to_pcm16(audio), timeout_s=120)))
            await asyncio.sleep(STAGGER_S)
        await asyncio.sleep(bounds[1][1] + 0.3 - STAGGER_S)  # the last one's second utterance spoken, its final not out
        redeployed = time.monotonic()
        await asyncio.to_thread(cluster["deploy"], 1)
        applied = time.monotonic()
        return await asyncio.gather(*running), redeployed, applied

    results, redeployed, applied = asyncio.run(sessions_while_scaling_in())
    reason = ShuttingDown.code
    drained = [r for r in results if r.of("session.closed") and r.of("session.closed")[-1]["reason"] == reason]
    untouched = [r for r in results if r not in drained]
    closed_after = [r.arrived_at[r.events.index(r.of("session.closed")[-1])] - redeployed for r in drained]
    spoken = [check_spoken_finals(r, bounds) for r in drained]
    print(
        f"ingress 2 -> 1: redeploy applied in {applied - redeployed:.2f} s; {len(drained)} sessions drained, "
        f"session.closed {min(closed_after, default=0):.2f}-{max(closed_after, default=0):.2f} s after the redeploy; "
        f"finals of the drained {[len(r.finals) for r in drained]} for {spoken} utterances spoken; "
        f"{len(untouched)} untouched with {[len(r.finals) for r in untouched]} finals; a poll's controller call "
        f"{poll_ms:.1f} ms, {len(pickle.dumps(answer)) / 1000:.1f} KB"
    )
    assert drained, "no session was drained: the removed replica's sessions ran on as if it stayed"
    assert untouched, "every session was drained: the surviving replica's too, or all were on one replica"
    for result in drained:
        assert result.events[-1]["type"] == "session.closed" and result.close_code == 1001, result.events[-3:]
        # audio the client sent after the drain began is ignored, and it is told so, once
        unexpected = [e for e in result.of("error") if "began closing" not in e["message"]]
        assert not unexpected and len(result.of("error")) <= 1, result.of("error")
        assert float(result.of("session.closed")[-1]["audio_seconds"]) < total_s - 1.0  # cut mid-stream
    assert min(spoken) >= 2  # the drain came after two utterances, as the redeploy did
    assert max(closed_after) < 8.0  # noticed within a poll, last finals delivered, closed: long before Serve's 25 s
    for result in untouched:
        assert not result.of("error") and result.close_code == 1000, result.events[-3:]
        assert len(result.finals) == len(SENTENCES), result.finals
        assert wer(" ".join(SENTENCES), result.text()) < 0.25, result.finals

    deadline = time.monotonic() + 60
    while ingress_actors() != 1 and time.monotonic() < deadline:  # the leaving replica is gone once drained
        time.sleep(0.5)
    assert ingress_actors() == 1
    # a client that reconnects is served by the surviving replica
    again = asyncio.run(stream_audio(url, to_pcm16(np.concatenate([synthesize(SENTENCES[3]), silence(1.0)]))))
    assert wer(SENTENCES[3], again.text()) < 0.25 and again.close_code == 1000, again.events
