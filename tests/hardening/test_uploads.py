"""Upload memory amplification and shutdown (issue 18 findings 2, 9, 10) against a real server.

What the guard bounds is the server's memory, so the tests read the server's resident memory (``/proc``)
besides the answers: absurd sample rates are refused before decoding, decodes beyond the bound and decoded
audio beyond the bound get ``overloaded`` (503, OpenAI's shape), and SIGTERM during a decode gets a 503.
"""

from __future__ import annotations

import io
import signal
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from ..conftest import ServerHandle, rss_mb, start_server
from ..helpers import synthesize

URL = "/v1/audio/transcriptions"


def one_hz_wav(seconds_declared: int = 14000) -> bytes:
    """A ~28 KB WAV declaring a 1 Hz sample rate: 14,000 s of audio (0.9 GB as float32) before the fix."""
    samples = np.zeros(seconds_declared, dtype=np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 8000, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    data[24:28] = struct.pack("<I", 1)
    data[28:32] = struct.pack("<I", 2)
    return bytes(data)


def silent_flac(minutes: int) -> bytes:
    """Minutes of digital silence as FLAC: a few hundred KB that decode for seconds."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=16000, channels=1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(16000 * 60, dtype=np.int16)
        for _ in range(minutes):
            f.write(block)
    return buffer.getvalue()


def wav(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def post(server: ServerHandle, data: bytes, name: str, timeout_s: float = 120) -> httpx.Response:
    return httpx.post(
        server.base_url + URL, files={"file": (name, data)}, data={"model": "whisper-1"}, timeout=timeout_s
    )


def in_thread(target: object) -> tuple[threading.Thread, list[httpx.Response]]:
    results: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: results.append(target()))  # type: ignore[operator]
    thread.start()
    return thread, results


@pytest.fixture(scope="module")
def one_decode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(tmp_path_factory.mktemp("uploads"), max_upload_decodes=1)
    yield handle
    handle.stop()


def test_four_concurrent_1_hz_wavs_are_refused_without_memory(one_decode: ServerHandle) -> None:
    """Finding 2: four such requests took the server's peak RSS from 0.24 to 3.66 GB."""
    peak_before = rss_mb(one_decode, "VmHWM")
    data = one_hz_wav()
    threads = [in_thread(lambda: post(one_decode, data, "slow.wav")) for _ in range(4)]
    for thread, _ in threads:
        thread.join()
    answers = [results[0] for _, results in threads]
    peak_after = rss_mb(one_decode, "VmHWM")
    print(f"4 x 1 Hz WAV: server peak RSS {peak_before:.0f} -> {peak_after:.0f} MB")
    for answer in answers:
        assert answer.status_code in (400, 503), answer.text
        error = answer.json()["error"]
        assert error["code"] in ("invalid_audio", "overloaded") and error["param"] == "file"
    assert any("1 Hz" in a.json()["error"]["message"] for a in answers)
    assert peak_after - peak_before < 100


def test_decodes_beyond_the_bound_get_overloaded(one_decode: ServerHandle) -> None:
    """One decode at a time here: a second upload while three hours of FLAC decode gets 503 at once."""
    long_file = silent_flac(200)  # seconds to decode even on a fast machine
    thread, first = in_thread(lambda: post(one_decode, long_file, "long.flac"))
    time.sleep(0.6)
    second = post(one_decode, wav(np.zeros(16000, dtype=np.float32)), "short.wav")
    thread.join()
    assert second.status_code == 503, second.text
    assert second.json()["error"]["code"] == "overloaded" and second.headers.get("retry-after")
    assert first[0].status_code == 200 and first[0].json()["text"] == ""


@pytest.mark.slow  # transcribes 45 s of speech; tests/hardening/test_upload_guard.py is the fast tier
def test_decoded_audio_held_beyond_the_bound_gets_overloaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """All uploads together may hold 40 s of decoded audio here: a 15 s upload while a 30 s one is being
    transcribed is refused; once that one is done, it goes through."""
    server = start_server(
        tmp_path_factory.mktemp("held"), max_upload_duration_s=40, max_upload_audio_held_s=40, upload_beam_size=1
    )
    try:
        sentence = synthesize("The quick brown fox jumps over the lazy dog near the riverbank at dawn.")
        gap = np.zeros(8000, dtype=np.float32)
        long_speech = np.tile(np.concatenate([sentence, gap]), 12)[: 30 * 16000]
        thread, first = in_thread(lambda: post(server, wav(long_speech), "long.wav"))
        time.sleep(1.5)  # decoded in milliseconds; transcribed in seconds
        second_file = wav(long_speech[: 15 * 16000])
        refused = post(server, second_file, "second.wav")
        thread.join()
        assert first[0].status_code == 200 and "lazy dog" in first[0].json()["text"].lower()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        deadline = time.monotonic() + 10
        while (again := post(server, second_file, "second.wav")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert again.status_code == 200, again.text
    finally:
        server.stop()


def test_sigterm_during_an_upload_decode_answers_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Finding 10: the client got a dropped connection."""
    server = start_server(tmp_path_factory.mktemp("sigterm"))
    try:
        long_file = silent_flac(239)  # decodes for several seconds, inside the 4 h default limit
        thread, answer = in_thread(lambda: post(server, long_file, "long.flac"))
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        thread.join()
        assert answer[0].status_code == 503, answer[0].text
        assert answer[0].json()["error"]["code"] == "server_shutdown"
        assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    finally:
        server.stop()
