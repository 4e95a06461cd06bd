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


def run_client(path, live_server, *extra: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "clients.stream", str(path), "--url", f"{live_server.ws_url}/v1/listen", *extra],
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
