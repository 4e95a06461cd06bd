"""The streaming client (`python -m clients.stream`) against a live server: WAV and FLAC, stereo, any rate."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import soundfile as sf

from ..helpers import REPO, silence, synthesize, wer

SENTENCE = "Thank you for calling customer support, how can I help you?"
OTHER = "The children are playing football in the park."


def run_client(path, live_server, *extra: str, url: str | None = None) -> str:
    url = url or f"{live_server.ws_url}/v1/listen"
    completed = subprocess.run(
        [sys.executable, "-m", "clients.stream", str(path), "--url", url, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_client_streams_a_stereo_flac_at_44k(live_server, tmp_path):
    left = np.concatenate([synthesize(SENTENCE, rate=44100), silence(1.0, 44100)])
    right = np.concatenate([silence(0.5, 44100), synthesize(OTHER, rate=44100), silence(1.0, 44100)])
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype=np.float32)
    stereo[: len(left), 0], stereo[: len(right), 1] = left, right
    path = tmp_path / "call.flac"
    sf.write(str(path), stereo, 44100)
    out = run_client(path, live_server, "--fast")
    finals = re.findall(r"^\[\s*([\d.]+) → \s*([\d.]+)\] ch(\d) (.*)$", out, flags=re.M)
    assert sorted(int(ch) for _, _, ch, _ in finals) == [0, 1], out
    texts = {int(ch): text for _, _, ch, text in finals}
    assert wer(SENTENCE, texts[0]) <= 0.2 and wer(OTHER, texts[1]) <= 0.2
    assert all(float(start) < float(end) for start, end, _, _ in finals)
    assert "session closed (client_closed" in out


def test_client_real_time_pace_shows_partials(live_server, tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(str(path), np.concatenate([synthesize(SENTENCE), silence(1.0)]), 16000, subtype="PCM_16")
    out = run_client(path, live_server, "--json", "--chunk-ms", "50")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    kinds = [__import__("json").loads(line)["type"] for line in lines]
    assert kinds[0] == "session.started" and kinds[-1] == "session.closed"
    assert "partial" in kinds and kinds.count("final") == 1
    assert kinds.index("partial") < kinds.index("final")


def test_client_takes_the_server_address_as_the_server_prints_it(live_server, tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(str(path), np.concatenate([synthesize(OTHER), silence(1.0)]), 16000, subtype="PCM_16")
    address = live_server.ws_url.replace("ws://", "http://")  # no path: /v1/listen is implied
    out = run_client(path, live_server, "--fast", url=address)
    (text,) = re.findall(r"^\[\s*[\d.]+ → \s*[\d.]+\] (.*)$", out, flags=re.M)
    assert wer(OTHER, text) <= 0.2, out


def test_listen_url_fills_in_what_a_user_leaves_out():
    from clients.stream import listen_url

    assert listen_url("ws://127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/listen"
    assert listen_url("localhost:8000/") == "ws://localhost:8000/v1/listen"
    assert listen_url("https://asr.example.com") == "wss://asr.example.com/v1/listen"
    assert listen_url("ws://h:1/v1/listen?language=en") == "ws://h:1/v1/listen?language=en"
