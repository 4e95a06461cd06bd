"""Streamed WebM/Ogg audio decoded incrementally (``codecs/container.py``), fed the way a browser's
MediaRecorder sends it: a header in the first chunk only, then slices of any size."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from stream_server.codecs.container import ContainerDecoder
from stream_server.errors import AudioFormatError

pytestmark = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("espeak-ng")), reason="needs ffmpeg and espeak-ng"
)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("container")
    wav = root / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "The quick brown fox jumps over the lazy dog. Please close the door."],
        check=True,
    )
    files = {"wav": wav}
    for ext, args in {"webm": ["-c:a", "libopus"], "ogg": ["-c:a", "libopus", "-page_duration", "100000"]}.items():
        out = root / f"speech.{ext}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), *args, str(out)], check=True)
        files[ext] = out
    return files


def reference(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.float32)


def envelope(x: np.ndarray) -> np.ndarray:
    n = len(x) // 320
    return np.sqrt((x[: n * 320].reshape(n, 320) ** 2).mean(axis=1))


def wait_drained(decoder: ContainerDecoder, timeout_s: float = 2.0) -> None:
    """Let the decode thread take what it was given (the test's stand-in for real-time pacing)."""
    deadline = time.monotonic() + timeout_s
    while decoder._pipe is not None and decoder._pipe.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.02)


def feed(decoder: ContainerDecoder, data: bytes, slice_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames returned before flush, frames returned by flush)."""
    parts = []
    for i in range(0, len(data), slice_bytes):
        parts.append(decoder.decode(data[i : i + slice_bytes]))
        wait_drained(decoder)
    return np.concatenate(parts), decoder.flush()


@pytest.mark.parametrize("ext", ["webm", "ogg"])
def test_a_stream_in_slices_decodes_whole_and_as_it_arrives(speech: dict[str, Path], ext: str) -> None:
    data = speech[ext].read_bytes()
    before, at_flush = feed(ContainerDecoder("auto", 1), data, slice_bytes=len(data) // 20 + 1)
    decoded = np.concatenate([before, at_flush])[:, 0]
    expected = reference(speech["wav"])
    assert abs(len(decoded) - len(expected)) < 0.05 * 16000  # whole stream, at 16 kHz
    assert len(before) > len(decoded) - 1.0 * 16000  # most of it before the end (a page or two trails)
    a, b = envelope(decoded), envelope(expected)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9  # the same speech (Opus is lossy; its envelope is not)


def test_the_declared_container_must_match(speech: dict[str, Path]) -> None:
    with pytest.raises(AudioFormatError, match="WebM"):
        ContainerDecoder("webm", 1).decode(speech["ogg"].read_bytes())


@pytest.mark.parametrize("junk", [b"\x00" * 4096, b"hello, this is not audio at all", bytes(range(256)) * 8])
def test_bytes_that_are_not_a_container_are_refused_at_once(junk: bytes) -> None:
    with pytest.raises(AudioFormatError, match="does not start like"):
        ContainerDecoder("auto", 1).decode(junk)


def test_garbage_after_a_valid_header_is_reported(speech: dict[str, Path]) -> None:
    data = speech["webm"].read_bytes()
    decoder = ContainerDecoder("auto", 1)
    rng = np.random.default_rng(0)
    with pytest.raises(AudioFormatError):
        decoder.decode(data[:200])
        for _ in range(50):
            decoder.decode(rng.bytes(4096))
            wait_drained(decoder, 0.2)
        decoder.flush()


def test_a_video_without_audio_is_refused(tmp_path: Path) -> None:
    video = tmp_path / "video.webm"
    made = subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=5:duration=1",
            "-c:v",
            "libvpx",
            str(video),
        ],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip("this ffmpeg has no VP8 encoder")
    decoder = ContainerDecoder("auto", 1)
    with pytest.raises(AudioFormatError, match="no audio"):
        decoder.decode(video.read_bytes())
        decoder.flush()


def test_a_recorder_restart_mid_stream_starts_a_new_stream(speech: dict[str, Path]) -> None:
    data = speech["webm"].read_bytes()
    decoder = ContainerDecoder("webm", 1)
    first, _ = feed(decoder, data, slice_bytes=4000)  # flush ended the first; feed again as a restart would
    decoder = ContainerDecoder("webm", 1)
    out = [decoder.decode(data[:4000])]
    for i in range(4000, len(data), 4000):
        out.append(decoder.decode(data[i : i + 4000]))
    out.append(decoder.decode(data))  # a new header in one chunk: the recorder restarted
    wait_drained(decoder)
    out.append(decoder.flush())
    total = sum(len(o) for o in out)
    single = len(np.concatenate([first, _]))
    assert abs(total - 2 * single) < 0.1 * 16000


def test_stereo_output_and_memory_bound(speech: dict[str, Path]) -> None:
    data = speech["ogg"].read_bytes()
    before, at_flush = feed(ContainerDecoder("ogg", 2), data, slice_bytes=2048)
    assert np.concatenate([before, at_flush]).shape[1] == 2
    small = ContainerDecoder("ogg", 1, max_pending_bytes=1000)
    with pytest.raises(AudioFormatError, match="waiting to be decoded"):
        for _ in range(200):
            small.decode(data[:4000])  # faster than any decoder: the bound trips, memory stays bounded
    small.close()


def test_close_stops_the_thread(speech: dict[str, Path]) -> None:
    decoder = ContainerDecoder("auto", 1)
    decoder.decode(speech["webm"].read_bytes()[:3000])
    thread = decoder._thread
    assert thread is not None and thread.is_alive()
    decoder.close()
    thread.join(2.0)
    assert not thread.is_alive()
