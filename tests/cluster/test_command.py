"""The README's cluster command, run as a newcomer runs it: ``stream-server cluster`` starts a local Ray cluster
with both tiers, and the caption page, the streaming client (``stream-client``) and the official OpenAI client
work through it."""

from __future__ import annotations

import json
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


def test_the_cluster_command_serves_the_page_the_streaming_client_and_the_openai_client(tmp_path: Path) -> None:
    pause = np.zeros(12000, np.float32)
    audio = np.concatenate([synthesize(SENTENCES[0]), pause, synthesize(SENTENCES[1]), pause])
    wav = tmp_path / "two.wav"
    sf.write(wav, audio, 16000)

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "stream_server", "cluster", "--decoders", "1", "--ingress", "1",
                "--port", str(port), "--cpu-threads", "1"]  # fmt: skip

    with ServerProcess(command, http_ok("/readyz"), name="cluster", log_dir=tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/", timeout=30) as response:  # noqa: S310 (loopback)
            page = response.read().decode()
        assert "/v1/listen" in page and "<html" in page.lower()  # the caption page, served by the ingress

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
