"""Stream an audio file to ``/v1/listen`` at real-time pace and show live captions.

    python -m clients.stream FILE [--url ws://127.0.0.1:8000/v1/listen] [--fast] [--chunk-ms 100]

Any WAV/FLAC (any rate, mono or stereo; decoded with PyAV). The partial of the open utterance is redrawn in
place; each final gets its own line with its times (and channel, for stereo). ``--fast`` sends as fast as the
server accepts instead of at real-time pace. ``--json`` prints every server event as a JSON line instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

import av
import numpy as np
import websockets


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Decode a file to interleaved int16 frames ``(n, channels)`` at its own sample rate."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        resampler = av.AudioResampler(format="s16", layout=stream.layout.name, rate=rate)
        chunks = [
            f.to_ndarray().reshape(-1, channels)
            for frame in container.decode(stream)
            for f in resampler.resample(frame)
        ]
    return np.concatenate(chunks).astype("<i2"), rate


def listen_url(url: str) -> str:
    """The websocket URL of ``/v1/listen`` from what a user types: ``ws://host:port``, ``http://host:port``
    (the address the server prints) or the whole URL."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/v1/listen"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


async def stream_file(
    path: str,
    url: str,
    fast: bool = False,
    chunk_ms: int = 100,
    json_lines: bool = False,
    api_key: str | None = None,
    extra: dict[str, str] | None = None,
) -> list[dict]:
    frames, rate = read_audio(path)
    channels = frames.shape[1]
    query = {"sample_rate": str(rate), "channels": str(channels), **(extra or {})}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    finals: list[dict] = []
    chunk = max(1, rate * chunk_ms // 1000)
    url = listen_url(url)
    separator = "&" if urlsplit(url).query else "?"
    async with websockets.connect(
        f"{url}{separator}{urlencode(query)}", additional_headers=headers, max_size=None
    ) as ws:

        async def send() -> None:
            t0 = time.monotonic()
            for i in range(0, len(frames), chunk):
                await ws.send(frames[i : i + chunk].tobytes())
                if not fast:
                    delay = t0 + (i + chunk) / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
            await ws.send(json.dumps({"type": "close_stream"}))

        sender = asyncio.create_task(send())
        width = min(os.get_terminal_size().columns if sys.stdout.isatty() else 100, 160)
        async for raw in ws:
            event = json.loads(raw)
            if json_lines:
                print(json.dumps(event), flush=True)
            elif event["type"] == "partial":
                line = f"  … {event['text']}"[: width - 1]
                print("\r" + line.ljust(width - 1), end="", flush=True)
            elif event["type"] == "final":
                tag = f"ch{event['channel']} " if channels > 1 else ""
                print("\r" + " " * (width - 1), end="\r")
                print(f"[{event['start']:7.2f} → {event['end']:7.2f}] {tag}{event['text']}", flush=True)
            elif event["type"] == "error":
                print(f"\n! {event['code']}: {event['message']}", file=sys.stderr)
            elif event["type"] == "session.closed":
                print(f"— session closed ({event['reason']}, {event['audio_seconds']:.1f} s of audio)")
            if event["type"] == "final":
                finals.append(event)
        await sender
    return finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument(
        "--url", default="ws://127.0.0.1:8000/v1/listen", help="the server (ws://host:port is enough; http:// works)"
    )
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not at real-time pace")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per websocket message (20-100 ms)")
    parser.add_argument("--json", action="store_true", help="print raw events as JSON lines")
    parser.add_argument("--api-key", default=os.environ.get("STREAM_SERVER_API_KEY"))
    parser.add_argument("--word-timestamps", action="store_true")
    args = parser.parse_args()
    extra = {"word_timestamps": "true"} if args.word_timestamps else {}
    try:
        asyncio.run(stream_file(args.file, args.url, args.fast, args.chunk_ms, args.json, args.api_key, extra))
    except (OSError, websockets.exceptions.WebSocketException) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
