"""Shared test helpers: speech synthesis, WER, a websocket streaming client, the shared audio manifest."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "audio"
SAMPLE_RATE = 16000


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    """Word error rate after Whisper's English normaliser, as in the Whisper paper."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    refs = [reference] if isinstance(reference, str) else reference
    hyps = [hypothesis] if isinstance(hypothesis, str) else hypothesis
    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    return float(jiwer.wer([r for r, _ in pairs], [h if h.strip() else "<empty>" for _, h in pairs]))


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
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    import soundfile as sf

    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path


def manifest() -> list[dict]:
    path = SHARED_AUDIO / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class StreamResult:
    events: list[dict] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)  # monotonic wall time of each event
    sent_at: list[tuple[float, float]] = field(default_factory=list)  # (stream seconds sent so far, wall time)
    final_arrivals: list[tuple[dict, float]] = field(default_factory=list)  # (final, latency_s)

    def delay_after(self, event: dict, stream_s: float) -> float:
        """Seconds between sending the audio up to ``stream_s`` and ``event`` arriving."""
        sent = next(w for s, w in self.sent_at if s >= stream_s)
        return self.arrived_at[self.events.index(event)] - sent

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def finals(self) -> list[dict]:
        return self.of("final")

    def text(self, channel: int | None = None) -> str:
        return " ".join(f["text"] for f in self.finals if channel is None or f["channel"] == channel)


async def stream_audio(
    ws_url: str,
    payload: bytes,
    *,
    sample_rate: int = SAMPLE_RATE,
    bytes_per_second: int | None = None,
    chunk_s: float = 0.1,
    realtime: bool = True,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    close: bool = True,
    timeout_s: float = 120.0,
) -> StreamResult:
    """Stream ``payload`` to /v1/listen, optionally at real-time pace; collect every event until the socket
    closes. A final's latency is its arrival time minus the wall time at which its ``end`` was sent."""
    import websockets

    bps = bytes_per_second or sample_rate * 2
    query = {"sample_rate": str(sample_rate), **(params or {})}
    result = StreamResult()
    chunk = max(2, int(bps * chunk_s)) // 2 * 2
    sent_at = result.sent_at
    async with websockets.connect(
        f"{ws_url}/v1/listen?{urlencode(query)}", additional_headers=headers, max_size=None, open_timeout=30
    ) as ws:

        async def sender() -> None:
            t0 = time.monotonic()
            for i in range(0, len(payload), chunk):
                await ws.send(payload[i : i + chunk])
                sent_at.append(((i + chunk) / bps, time.monotonic()))
                if realtime:
                    delay = t0 + (i + chunk) / bps - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
            if close:
                await ws.send(json.dumps({"type": "close_stream"}))

        task = asyncio.create_task(sender())

        async def receiver() -> None:
            async for raw in ws:
                event = json.loads(raw)
                result.events.append(event)
                result.arrived_at.append(time.monotonic())
                if event["type"] == "final":
                    sent = next((w for s, w in sent_at if s >= event["end"]), None)
                    if sent is not None:
                        result.final_arrivals.append((event, time.monotonic() - sent))

        await asyncio.wait_for(receiver(), timeout_s)
        await task
    return result
