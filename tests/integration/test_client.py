"""The protocol-v1 client library (``stream_server.clients.v1``) and its CLI (``python -m
stream_server.clients.stream``, the ``stream-client`` script): pure parsing and pacing, then against a live server
with WAV and FLAC, stereo, any rate."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from stream_server.clients import v1
from stream_server.clients.stream import listen_url

from ..helpers import REPO, silence, synthesize, to_pcm16, wer

SENTENCE = "Thank you for calling customer support, how can I help you?"
OTHER = "The children are playing football in the park."


def run_client(path, live_server, *extra: str, url: str | None = None) -> str:
    url = url or f"{live_server.ws_url}/v1/listen"
    completed = subprocess.run(
        [sys.executable, "-m", "stream_server.clients.stream", str(path), "--url", url, *extra],
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
    kinds = [json.loads(line)["type"] for line in lines]
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

    assert listen_url("ws://127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/listen"
    assert listen_url("localhost:8000/") == "ws://localhost:8000/v1/listen"
    assert listen_url("https://asr.example.com") == "wss://asr.example.com/v1/listen"
    assert listen_url("ws://h:1/v1/listen?language=en") == "ws://h:1/v1/listen?language=en"
    assert v1.session_url("h:1", {"sample_rate": 8000, "interim_results": False}) == (
        "ws://h:1/v1/listen?sample_rate=8000&interim_results=false"
    )
    assert v1.session_url("ws://h:1/v1/listen?language=en", {"a": 1}).endswith("?language=en&a=1")


def test_parse_event_types_every_v1_message():
    final = v1.parse_event(
        json.dumps(
            {
                "type": "final",
                "utterance_id": 3,
                "channel": 1,
                "start": 0.5,
                "end": 2.25,
                "text": " Hi.",
                "language": "en",
                "words": [{"word": "Hi.", "start": 0.5, "end": 0.9, "probability": 0.9}],
            }
        )
    )
    assert isinstance(final, v1.Final)
    assert (final.utterance_id, final.channel, final.end, final.reason) == (3, 1, 2.25, None)
    assert final.words == (v1.Word("Hi.", 0.5, 0.9, 0.9),) and final.raw["text"] == " Hi."
    closed = v1.parse_event('{"type": "session.closed", "reason": "client_closed", "audio_seconds": 4}')
    assert closed == v1.SessionClosed("client_closed", 4.0, raw={})
    assert isinstance(v1.parse_event('{"type": "error", "code": "bad", "message": "no"}'), v1.Error)
    assert isinstance(
        v1.parse_event('{"type": "speech.started", "utterance_id": 0, "channel": 0, "start": 1}'), v1.SpeechStarted
    )
    assert v1.parse_event('{"type": "later.feature"}') == v1.Unknown("later.feature", raw={})
    for bad in (b"binary", "not json", '{"type": "final"}', "[1]"):
        with pytest.raises(v1.ProtocolViolation):
            v1.parse_event(bad)


def test_send_log_maps_stream_time_to_the_chunk_holding_the_last_sample_before_it():
    log = v1.SendLog(16000)
    for i in range(5):  # 100 ms chunks sent at 10.0, 10.1, ...
        log.record(i * 1600, 1600, 10.0 + i * 0.1)
    assert log.sent_at(0.05) == pytest.approx(10.0)
    # a result ending exactly at 0.2 s covers samples up to 3199, which left with chunk 1
    assert log.sent_at(0.2) == pytest.approx(10.1)
    assert log.sent_at(0.2001) == pytest.approx(10.2)
    assert log.sent_at(99.0) == pytest.approx(10.4)  # beyond the stream: the last chunk
    assert log.latency(0.2, 10.6) == pytest.approx(0.5)
    assert log.samples_sent == 8000 and log.seconds_sent == pytest.approx(0.5)
    with pytest.raises(ValueError):
        log.record(0, 10, 11.0)
    assert v1.SendLog().sent_at(1.0) is None


def test_send_paced_keeps_real_time_without_drift_and_fast_mode_does_not_wait():
    sent: list[tuple[int, float]] = []

    async def send(chunk: bytes) -> None:
        sent.append((len(chunk), time.monotonic()))

    payload = bytes(2 * 16000 * 6 // 10)  # 0.6 s of 16-bit mono
    log = v1.SendLog(16000)
    t0 = time.monotonic()
    late = asyncio.run(v1.send_paced(send, payload, frame_bytes=2, log=log, chunk_s=0.1))
    assert [n for n, _ in sent] == [3200] * 6 and log.samples_sent == 9600
    offsets = [at - t0 for _, at in sent]
    assert offsets[-1] == pytest.approx(0.5, abs=0.08) and late < 0.08  # chunk i leaves at i * 100 ms
    sent.clear()
    t0 = time.monotonic()
    asyncio.run(
        v1.send_paced(send, payload + b"\0", frame_bytes=2, log=v1.SendLog(16000), chunk_s=0.25, realtime=False)
    )
    assert [n for n, _ in sent] == [8000, 8000, 3200]  # whole frames only: the odd byte is not sent
    assert sent[-1][1] - t0 < 0.05


def test_library_streams_and_times_each_final(live_server):
    audio = np.concatenate([silence(0.3), synthesize(SENTENCE), silence(1.0), synthesize(OTHER), silence(1.0)])
    client = v1.Client(live_server.ws_url, params={"endpointing_ms": 500})
    transcript = asyncio.run(v1.transcribe(client, to_pcm16(audio), chunk_s=0.1, realtime=True))
    kinds = [type(e).__name__ for e in transcript.events]
    assert kinds[0] == "SessionStarted" and kinds[-1] == "SessionClosed" and "Partial" in kinds
    assert len(transcript.finals) == 2 and wer(f"{SENTENCE} {OTHER}", transcript.text()) <= 0.2
    # each final arrives after its end was sent, within the endpointing wait plus a decode
    assert len(transcript.final_latencies_s) == 2
    assert all(0.4 <= latency <= 3.0 for latency in transcript.final_latencies_s), transcript.final_latencies_s
    assert transcript.close_code == 1000 and transcript.max_send_late_s < 0.5


def test_library_reports_a_refusal_as_an_error_event(live_server):
    client = v1.Client(live_server.ws_url, params={"no_such_param": "1"})
    transcript = asyncio.run(v1.transcribe(client, to_pcm16(silence(2.0)), realtime=False))
    (error,) = transcript.events
    assert isinstance(error, v1.Error) and "no_such_param" in error.message
    assert transcript.close_code is not None and transcript.close_code != 1000
