"""The two tiers on a real local Ray cluster (CPU decoders, the embedded model): texts through both tiers, session
affinity, a decoder killed mid-stream (every utterance still gets exactly one final, in order) and scale-out
under load, and a redeploy that scales decoders down mid-stream (the leaving replica drains: no lost final). The
fast representative runs by default; the rest behind the ``slow`` marker."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
serve = pytest.importorskip("ray.serve")

from benchmarks.launch import free_port  # noqa: E402
from stream_server.cluster.app import DECODERS_APP, INGRESS_APP, ClusterPlan, build  # noqa: E402
from stream_server.config import Settings  # noqa: E402
from tests.helpers import synthesize, wer  # noqa: E402

SENTENCES = [
    "Good morning everyone, please open the window before you leave.",
    "The weather will be cold and windy tomorrow afternoon.",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    port = free_port()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = Settings(cpu_threads=1, port=port)
    ingress, decoders = build(settings, ClusterPlan(decoders=2, ingress=2, drain_s=10.0))
    serve.run(decoders, name=DECODERS_APP, route_prefix=None)
    serve.run(ingress, name=INGRESS_APP, route_prefix="/")
    try:
        yield {"port": port, "settings": settings}
    finally:
        serve.shutdown()
        ray.shutdown()


def decoder_actors() -> list[Any]:
    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Decoder#" in a["name"]]
    return [ray.get_actor(a["name"], namespace=a["namespace"]) for a in names]


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def two_sentences() -> np.ndarray:
    pause = np.zeros(16000, np.float32)
    return np.concatenate([synthesize(SENTENCES[0]), pause, synthesize(SENTENCES[1]), pause])


async def stream(
    port: int, audio: np.ndarray, pace: float = 1.0, on_final: Any = None, errors: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Stream ``audio`` (16 kHz) at ``pace`` x real time; returns the finals received, in order (error events
    go to ``errors`` when given)."""
    import websockets

    finals: list[dict[str, Any]] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/listen") as ws:

        async def read() -> None:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "final":
                    finals.append(event)
                    if on_final is not None:
                        on_final(event)
                elif event["type"] == "error" and errors is not None:
                    errors.append(event)
                elif event["type"] == "session.closed":
                    return

        reader = asyncio.create_task(read())
        data, step = pcm16(audio), 3200  # 100 ms
        for i in range(0, len(data), step):
            await ws.send(data[i : i + step])
            await asyncio.sleep(0.1 / pace)
        await ws.send(json.dumps({"type": "close_stream"}))
        await asyncio.wait_for(reader, 120)
    return finals


def check_finals(finals: list[dict[str, Any]], sentences: list[str] = SENTENCES) -> None:
    ids = [f["utterance_id"] for f in finals]
    assert ids == sorted(set(ids)), f"finals duplicated or out of order: {ids}"
    assert wer(" ".join(sentences), " ".join(f["text"] for f in finals)) < 0.25, finals


def deploy_decoders(settings: Settings, replicas: int) -> None:
    """Redeploy the decoder application with ``replicas`` replicas (a new version: Serve replaces every replica,
    draining the old ones) and wait until exactly that many decoder actors remain."""
    _, decoders = build(settings, ClusterPlan(decoders=replicas, ingress=2, drain_s=10.0))
    serve.run(decoders, name=DECODERS_APP, route_prefix=None)
    deadline = time.monotonic() + 60
    while len(decoder_actors()) != replicas and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(decoder_actors()) == replicas


def items_per_decoder(port: int) -> dict[str, int]:
    status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status").read())
    return {load["replica"]: load["items"] for load in status["decoders"]}


def wait_until_routable(port: int, decoders: int) -> None:
    """Until every decoder answers ``/v1/status`` several times in a row (a replacement may still be starting)."""
    deadline, seen = time.monotonic() + 60, 0
    while seen < 6 and time.monotonic() < deadline:
        seen = seen + 1 if len(items_per_decoder(port)) == decoders else 0
        time.sleep(0.5)


def test_sessions_and_an_upload_through_both_tiers(cluster: dict[str, Any]) -> None:
    port = cluster["port"]
    audio = two_sentences()

    async def sessions() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*[stream(port, audio, pace=4.0) for _ in range(8)])

    for finals in asyncio.run(sessions()):
        check_finals(finals)
    # an upload goes through the same decoders (the OpenAI client path)
    import io

    import soundfile as sf
    from openai import OpenAI

    wav = io.BytesIO()
    sf.write(wav, audio, 16000, format="WAV")
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav.getvalue())).text
    assert wer(" ".join(SENTENCES), text) < 0.25
    status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status").read())
    loads = status["decoders"]
    assert len(loads) == 2 and all(load["items"] > 0 for load in loads), loads  # sessions spread over both
    # every session and the upload released its place: none still counts as load on a decoder
    deadline = time.monotonic() + 10
    while any(load["owners"] for load in loads) and time.monotonic() < deadline:
        time.sleep(0.2)
        loads = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status").read())["decoders"]
    assert not any(load["owners"] for load in loads), loads


@pytest.mark.slow
def test_scale_down_mid_stream_drains_with_no_lost_final(cluster: dict[str, Any]) -> None:
    """Sessions on both decoders; a redeploy takes the tier from two replicas to one while every session is
    mid-utterance. Every utterance of every session gets exactly one final, in order, and no error."""
    port, settings = cluster["port"], cluster["settings"]
    if len(decoder_actors()) != 2:
        deploy_decoders(settings, 2)
    sentences = SENTENCES * 2
    pause = np.zeros(16000, np.float32)
    audio = np.concatenate([part for text in sentences for part in (synthesize(text), pause)])
    sessions = 6
    errors: list[dict[str, Any]] = []

    wait_until_routable(port, 2)

    async def sessions_while_scaling_down() -> tuple[list[list[dict[str, Any]]], list[int]]:
        before = await asyncio.to_thread(items_per_decoder, port)
        first_final = asyncio.Event()
        running = [
            asyncio.create_task(stream(port, audio, on_final=lambda _: first_final.set(), errors=errors))
            for _ in range(sessions)
        ]
        await asyncio.wait_for(first_final.wait(), 60)
        after = await asyncio.to_thread(items_per_decoder, port)
        await asyncio.to_thread(deploy_decoders, settings, 1)
        return await asyncio.gather(*running), [after[r] - before.get(r, 0) for r in after]

    try:
        results, jobs_before = asyncio.run(sessions_while_scaling_down())
    finally:
        deploy_decoders(settings, 2)  # as the other tests expect the tier
    finals = sum(len(f) for f in results)
    print(
        f"scale-down: {sessions} sessions, {sessions * len(sentences)} utterances, {finals} finals, "
        f"{len(errors)} errors; jobs per decoder before it {jobs_before}"
    )
    assert len(jobs_before) == 2 and all(jobs_before), jobs_before  # the sessions were on both decoders
    assert not errors, errors
    for session_finals in results:
        assert len(session_finals) == len(sentences), session_finals
        check_finals(session_finals, sentences)


@pytest.mark.slow
def test_a_decoder_killed_mid_stream_loses_no_final(cluster: dict[str, Any]) -> None:
    port = cluster["port"]
    audio = two_sentences()
    killed: list[float] = []

    def kill_once(event: dict[str, Any]) -> None:
        if not killed:  # after the first final anywhere: every session is mid-stream
            ray.kill(decoder_actors()[0], no_restart=True)
            killed.append(time.monotonic())

    async def sessions() -> list[list[dict[str, Any]]]:
        first = stream(port, audio, on_final=kill_once)
        return await asyncio.gather(first, *[stream(port, audio) for _ in range(5)])

    results = asyncio.run(sessions())
    assert killed
    for finals in results:
        assert len(finals) == len(SENTENCES), finals
        check_finals(finals)
    deadline = time.monotonic() + 60
    while len(decoder_actors()) < 2 and time.monotonic() < deadline:  # Serve replaces the dead replica
        time.sleep(1)
    assert len(decoder_actors()) == 2
    # the survivor's sessions were released when they closed: new sessions go to it as to the replacement
    wait_until_routable(port, 2)
    before = items_per_decoder(port)

    async def new_sessions() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*[stream(port, audio, pace=4.0) for _ in range(4)])

    for finals in asyncio.run(new_sessions()):
        check_finals(finals)
    after = items_per_decoder(port)
    assert all(after[r] > before.get(r, 0) for r in after), (before, after)


@pytest.mark.slow
def test_scale_out_under_load(cluster: dict[str, Any]) -> None:
    port, settings = cluster["port"], cluster["settings"]
    audio = two_sentences()

    async def sessions_while_scaling() -> list[list[dict[str, Any]]]:
        running = [asyncio.create_task(stream(port, audio)) for _ in range(4)]
        await asyncio.sleep(1.0)
        _, decoders = build(settings, ClusterPlan(decoders=3, ingress=2, drain_s=10.0))
        await asyncio.to_thread(serve.run, decoders, name=DECODERS_APP, route_prefix=None)
        return await asyncio.gather(*running)

    for finals in asyncio.run(sessions_while_scaling()):
        check_finals(finals)
    assert len(decoder_actors()) == 3
