"""Shared test helpers: speech synthesis, WER (the benchmarks' own), streaming through the protocol-v1 client
library, the shared audio manifest."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.metrics import wer as wer  # one WER for the tests and the benchmarks
from stream_server.clients import v1

REPO = Path(__file__).resolve().parents[1]
# ../shared/audio beside the checkout; BENCH_AUDIO_DIR (as for the benchmarks) where the checkout is elsewhere
SHARED_AUDIO = Path(os.environ.get("BENCH_AUDIO_DIR") or REPO.parent / "shared" / "audio")
SAMPLE_RATE = 16000
Json = dict[str, Any]  # one decoded protocol message


def synthesize(text: str, rate: int = SAMPLE_RATE, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng speech as float32 mono at ``rate`` Hz."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    import io

    import soundfile as sf

    audio, native = sf.read(io.BytesIO(wav), dtype="float32")
    return resample(audio, native, rate)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio.astype(np.float32)
    from stream_server.audio import Resampler

    r = Resampler(rate_in)  # resamples to 16 kHz only; go via 16 kHz for other targets
    mid = np.concatenate([r(audio), r.flush()])
    if rate_out == SAMPLE_RATE:
        return mid
    import av

    out = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    frame = av.AudioFrame.from_ndarray(mid[None, :], "flt", "mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    frames = out.resample(frame) + out.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def silence(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def to_pcm16(audio: np.ndarray) -> bytes:
    pcm: bytes = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    import soundfile as sf

    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path


def manifest() -> list[Json]:
    path = SHARED_AUDIO / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class StreamResult:
    """What ``stream_audio`` saw: every event as its JSON dict, with arrival times and final latencies."""

    transcript: v1.Transcript
    send_log: v1.SendLog

    @property
    def events(self) -> list[Json]:
        return [dict(r.event.raw) for r in self.transcript.received]

    @property
    def arrived_at(self) -> list[float]:  # monotonic wall time of each event
        return [r.at for r in self.transcript.received]

    @property
    def final_arrivals(self) -> list[tuple[Json, float]]:  # (final, latency_s)
        return [
            (dict(r.event.raw), r.latency_s)
            for r in self.transcript.received
            if isinstance(r.event, v1.Final) and r.latency_s is not None
        ]

    @property
    def close_code(self) -> int | None:
        return self.transcript.close_code

    def delay_after(self, event: Json, stream_s: float) -> float:
        """Seconds between sending the audio up to ``stream_s`` and ``event`` arriving."""
        sent = self.send_log.sent_at(stream_s)
        assert sent is not None, "no audio was sent"
        return self.arrived_at[self.events.index(event)] - sent

    def of(self, kind: str) -> list[Json]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def finals(self) -> list[Json]:
        return self.of("final")

    def text(self, channel: int | None = None) -> str:
        return " ".join(f["text"] for f in self.finals if channel is None or f["channel"] == channel)


async def stream_audio(
    ws_url: str,
    payload: bytes,
    *,
    sample_rate: int = SAMPLE_RATE,
    chunk_s: float = 0.1,
    realtime: bool = True,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    close: bool = True,
    timeout_s: float = 120.0,
    bytes_per_second: int | None = None,
) -> StreamResult:
    """Stream ``payload`` to /v1/listen of ``ws_url`` with the protocol-v1 client library, optionally at
    real-time pace; collect every event until the socket closes. ``bytes_per_second`` is implied by the
    ``encoding`` and ``channels`` in ``params``; a larger value paces the audio that many times faster."""
    params = dict(params or {})
    channels = int(params.pop("channels", "1"))
    encoding = params.pop("encoding", "pcm_s16le")
    assert encoding in ("pcm_s16le", "pcm_f32le"), encoding
    client = v1.Client(
        ws_url,
        sample_rate=sample_rate,
        channels=channels,
        encoding=encoding,  # type: ignore[arg-type]
        params=params,
        headers=headers,
    )
    # bytes_per_second faster than the audio's own rate sends it that many times faster than real time
    speed = bytes_per_second / (sample_rate * client.frame_bytes) if bytes_per_second else 1.0
    transcript = await asyncio.wait_for(
        v1.transcribe(client, payload, chunk_s=chunk_s, realtime=realtime, close=close, speed=speed), timeout_s
    )
    return StreamResult(transcript, client.send_log)
