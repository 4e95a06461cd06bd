"""The README's cluster command, run as a newcomer runs it: ``stream-server cluster`` starts a local Ray cluster
with both tiers, and the caption page, the streaming client (``stream-client``) and the official OpenAI client
work through it; SIGTERM drains a live session (its finals, then ``session.closed``) before the tiers stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from benchmarks.launch import ServerProcess, http_ok  # noqa: E402
from tests.helpers import synthesize, wer  # noqa: E402

SENTENCES = ["The train to the airport leaves every twenty minutes.", "Please bring your ticket and passport."]


def cluster_command(port: int) -> list[str]:
    return [sys.executable, "-m", "stream_server", "cluster", "--decoders", "1", "--ingress", "1",
            "--port", str(port), "--cpu-threads", "1"]  # fmt: skip


def test_the_cluster_command_serves_the_page_the_clients_and_drains_on_sigterm(tmp_path: Path) -> None:
    pause = np.zeros(12000, np.float32)
    audio = np.concatenate([synthesize(SENTENCES[0]), pause, synthesize(SENTENCES[1]), pause])
    wav = tmp_path / "two.wav"
    sf.write(wav, audio, 16000)

    with ServerProcess(cluster_command, http_ok("/readyz"), name="cluster", log_dir=tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/", timeout=30) as response:  # noqa: S310 (loopback)
            page = response.read().decode()
        assert "Live captions" in page and 'src="app.js"' in page  # the caption page, served by the ingress
        with urllib.request.urlopen(f"{base}/app.js", timeout=30) as response:  # noqa: S310 (loopback)
            assert "/v1/listen" in response.read().decode()  # and its script, which opens the stream

        done = subprocess.run(
            [sys.executable, "-m", "stream_server.clients.stream", str(wav), "--url", base, "--json", "--fast"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        finals = [e["text"] for e in events if e["type"] == "final"]
        assert wer(" ".join(SENTENCES), " ".join(finals)) < 0.25, events

        from openai import OpenAI

        client = OpenAI(base_url=f"{base}/v1", api_key="none")
        text = client.audio.transcriptions.create(model="whisper-1", file=("two.wav", wav.read_bytes())).text
        assert wer(" ".join(SENTENCES), text) < 0.25, text

        assert server.pid is not None
        events = asyncio.run(stream_through_sigterm(f"ws://127.0.0.1:{server.port}/v1/listen", audio, server.pid))
    finals = [e for e in events if e["type"] == "final"]
    assert finals and wer(SENTENCES[0], str(finals[0]["text"])) < 0.25, events
    assert events[-1]["type"] == "session.closed", events  # drained, not cut


async def stream_through_sigterm(url: str, audio: np.ndarray, pid: int) -> list[dict[str, object]]:
    """Stream ``audio`` at real-time pace; SIGTERM the cluster command (its own process only, as an orchestrator
    stops it) once the first final arrives; return every event until the server closes the socket."""
    import websockets

    events: list[dict[str, object]] = []
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with websockets.connect(url) as ws:

        async def read() -> None:
            async for message in ws:
                events.append(json.loads(message))
                if events[-1]["type"] == "final" and sum(e["type"] == "final" for e in events) == 1:
                    os.kill(pid, signal.SIGTERM)

        reader = asyncio.create_task(read())
        try:
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
                await asyncio.sleep(0.1)
        except websockets.ConnectionClosed:
            pass  # the drain closed the session while audio was still being sent
        await asyncio.wait_for(reader, 90)
    return events
