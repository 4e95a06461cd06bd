"""Stream an audio file to ``/v1/listen`` at real-time pace and show live captions.

    stream-client FILE [--url ws://127.0.0.1:8000] [--fast] [--chunk-ms 100] [--json]
    python -m stream_server.clients.stream FILE ...

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

import av
import numpy as np
import websockets

from .v1 import Client, Error, Final, Partial, ProtocolViolation, SessionClosed, listen_url

__all__ = ["listen_url", "main", "read_audio", "stream_file"]


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


async def stream_file(
    path: str,
    url: str,
    fast: bool = False,
    chunk_ms: int = 100,
    json_lines: bool = False,
    api_key: str | None = None,
    extra: dict[str, str] | None = None,
) -> list[Final]:
    """Stream ``path`` to the server at ``url`` and print its events; returns the finals."""
    frames, rate = read_audio(path)
    channels = int(frames.shape[1])
    finals: list[Final] = []
    width = min(os.get_terminal_size().columns if sys.stdout.isatty() else 100, 160)
    async with Client(url, sample_rate=rate, channels=channels, params=extra, api_key=api_key) as client:
        sender = asyncio.create_task(client.stream(frames.tobytes(), chunk_s=chunk_ms / 1000, realtime=not fast))
        async for received in client:
            event = received.event
            if json_lines:
                print(json.dumps(dict(event.raw)), flush=True)
            elif isinstance(event, Partial):
                line = f"  … {event.text}"[: width - 1]
                print("\r" + line.ljust(width - 1), end="", flush=True)
            elif isinstance(event, Final):
                tag = f"ch{event.channel} " if channels > 1 else ""
                print("\r" + " " * (width - 1), end="\r")
                print(f"[{event.start:7.2f} → {event.end:7.2f}] {tag}{event.text}", flush=True)
            elif isinstance(event, Error):
                print(f"\n! {event.code}: {event.message}", file=sys.stderr)
            elif isinstance(event, SessionClosed):
                print(f"— session closed ({event.reason}, {event.audio_seconds:.1f} s of audio)")
            if isinstance(event, Final):
                finals.append(event)
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return finals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="stream-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file")
    parser.add_argument(
        "--url", default="ws://127.0.0.1:8000/v1/listen", help="the server (ws://host:port is enough; http:// works)"
    )
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not at real-time pace")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per websocket message (20-100 ms)")
    parser.add_argument("--json", action="store_true", help="print raw events as JSON lines")
    parser.add_argument("--api-key", default=os.environ.get("STREAM_SERVER_API_KEY"))
    parser.add_argument("--word-timestamps", action="store_true")
    args = parser.parse_args(argv)
    extra = {"word_timestamps": "true"} if args.word_timestamps else {}
    try:
        asyncio.run(stream_file(args.file, args.url, args.fast, args.chunk_ms, args.json, args.api_key, extra))
    except (OSError, av.error.FFmpegError, websockets.exceptions.WebSocketException, ProtocolViolation) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
