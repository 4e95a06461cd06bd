"""Streaming load: N concurrent real-time clients against one server, over real websockets.

Each client streams its own excerpt of the long recordings (its own start offset, see ``audio.plan_excerpts``)
in ``chunk_ms`` frames at real-time pace (``stream_server.clients.v1.send_paced``: pacing never drifts), clients
starting staggered by a fraction of a chunk so their frames do not arrive in lock-step. Every result is timed
against the send time of the audio it covers (``metrics.SendLog``).

Run alone against a server that is already up::

    python -m benchmarks.stream_load --url ws://127.0.0.1:8000 --protocol native --clients 1,2,4 --duration 30
    python -m benchmarks.stream_load --url ws://127.0.0.1:8000 --workload turns --clients 8 --duration 60

(``benchmarks.run`` starts and stops the servers itself and sweeps every system.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import websockets

from stream_server.clients.v1 import send_paced

from . import metrics
from .audio import SAMPLE_RATE, Excerpt, default_audio_dir, load_long_recordings, plan_excerpts
from .protocols import AdapterConfig, ResultEvent, StreamAdapter
from .results import LevelResult

CONNECT_TIMEOUT_S = 60.0
HANDSHAKE_TIMEOUT_S = 60.0
FINISH_TIMEOUT_S = 30.0


@dataclass
class ClientResult:
    client: int
    source: str
    offset_s: float
    audio_s: float
    final_latencies_s: list[float] = field(default_factory=list)
    final_points: list[tuple[float, float]] = field(default_factory=list)  # (end_s, latency_s)
    final_reasons: list[str] = field(default_factory=list)  # why each final ended ("unreported": not said)
    final_timings: list[dict[str, Any]] = field(default_factory=list)  # the server's stages, with "reason"
    partial_lags_s: list[float] = field(default_factory=list)
    transcript: str = ""
    reference: str = ""
    finish_s: float | None = None  # from the last audio frame sent to the server being done
    max_send_late_s: float = 0.0  # how far behind schedule the client itself got (client-side overload)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


async def run_client(
    index: int,
    base_url: str,
    adapter_config: AdapterConfig,
    excerpt: Excerpt,
    start_delay_s: float,
    chunk_ms: int,
    finish_timeout_s: float = FINISH_TIMEOUT_S,
) -> ClientResult:
    adapter = adapter_config.make()
    result = ClientResult(
        index, excerpt.source, round(excerpt.offset_s, 3), round(excerpt.duration_s, 3), reference=excerpt.reference
    )
    send_log = metrics.SendLog(SAMPLE_RATE)
    events: list[ResultEvent] = []
    await asyncio.sleep(start_delay_s)
    try:
        async with websockets.connect(
            adapter.url(base_url), open_timeout=CONNECT_TIMEOUT_S, max_size=None, ping_interval=None, close_timeout=5
        ) as ws:

            async def receive() -> None:
                try:
                    async for message in ws:
                        now = time.monotonic()
                        adapter.last_message_at = now
                        events.extend(adapter.feed(message, now))
                except websockets.ConnectionClosed:
                    pass
                finally:
                    adapter.finished.set()

            receiver = asyncio.create_task(receive())
            try:
                await adapter.handshake(ws, HANDSHAKE_TIMEOUT_S)
                await _send_paced(ws, adapter, excerpt.samples, chunk_ms, send_log, result)
                last_sent = time.monotonic()
                await adapter.finish(ws, excerpt.duration_s, finish_timeout_s)
                result.finish_s = time.monotonic() - last_sent
            finally:
                await ws.close()
                await asyncio.wait_for(receiver, 10)
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    result.errors.extend(adapter.errors)
    result.warnings.extend(adapter.warnings)
    result.transcript = adapter.transcript()
    for event in events:
        sent = send_log.sent_at(event.end_s)
        if sent is None:
            continue
        lag = event.arrival - sent
        if event.kind == "final":
            result.final_latencies_s.append(lag)
            result.final_points.append((event.end_s, lag))
            result.final_reasons.append(event.reason or "unreported")
            if event.timing is not None:
                result.final_timings.append({**event.timing, "reason": event.reason or "unreported"})
        else:
            result.partial_lags_s.append(lag)
    return result


async def _send_paced(
    ws: Any, adapter: StreamAdapter, samples: np.ndarray, chunk_ms: int, send_log: metrics.SendLog, result: ClientResult
) -> None:
    async def send(pcm: bytes) -> None:
        await ws.send(adapter.audio_frame(pcm))

    late = await send_paced(send, samples.astype("<i2").tobytes(), frame_bytes=2, log=send_log, chunk_s=chunk_ms / 1000)
    result.max_send_late_s = max(result.max_send_late_s, late)


async def run_level(
    system: str,
    base_url: str,
    adapter_config: AdapterConfig,
    excerpts: list[Excerpt],
    chunk_ms: int = 100,
    finish_timeout_s: float = FINISH_TIMEOUT_S,
) -> LevelResult:
    """All clients of one concurrency level, started staggered within one chunk period."""
    n = len(excerpts)
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            run_client(
                k,
                base_url,
                adapter_config,
                ex,
                start_delay_s=(k * chunk_ms / 1000.0) / max(1, n),
                chunk_ms=chunk_ms,
                finish_timeout_s=finish_timeout_s,
            )
            for k, ex in enumerate(excerpts)
        )
    )
    return summarize_level(system, chunk_ms, time.monotonic() - started, list(results))


def summarize_level(system: str, chunk_ms: int, wall_s: float, results: list[ClientResult]) -> LevelResult:
    finals = [lat for r in results for lat in r.final_latencies_s]
    partials = [lag for r in results for lag in r.partial_lags_s]
    points = [p for r in results for p in r.final_points]
    slope = metrics.latency_slope(points)
    all_ok = all(r.ok for r in results) and all(r.final_latencies_s for r in results)
    errors = [f"client {r.client}: {e}" for r in results for e in r.errors]
    errors += [f"client {r.client}: no final result" for r in results if not r.final_latencies_s and r.ok]
    level_kept_up = metrics.kept_up(slope, all_ok)
    final_summary = metrics.summarize(finals)
    finish = [r.finish_s for r in results if r.finish_s is not None]
    by_reason: dict[str, list[float]] = {}
    for r in results:
        for reason, latency in zip(r.final_reasons, r.final_latencies_s):
            by_reason.setdefault(reason, []).append(latency)
    return LevelResult(
        system=system,
        clients=len(results),
        chunk_ms=chunk_ms,
        wall_s=round(wall_s, 2),
        audio_s=round(sum(r.audio_s for r in results), 2),
        final_latency_s=_rounded(final_summary),
        partial_lag_s=_rounded(metrics.summarize(partials)),
        latency_slope=None if slope is None else round(slope, 4),
        wer=metrics.rounded(metrics.corpus_wer((r.reference, r.transcript) for r in results)),
        kept_up=level_kept_up,
        passed=metrics.level_passes(final_summary["p95"], level_kept_up),
        finish_s_max=metrics.rounded(max(finish)) if finish else None,
        client_errors=errors[:20],
        client_warnings=[f"client {r.client}: {w}" for r in results for w in r.warnings][:20],
        per_client=[_client_row(r) for r in results],
        final_reasons={k: len(v) for k, v in sorted(by_reason.items())} or None,
        final_latency_by_reason_s={k: _rounded(metrics.summarize(v)) for k, v in sorted(by_reason.items())} or None,
        latency_breakdown_s=metrics.breakdown_by_reason([t for r in results for t in r.final_timings]),
    )


def _client_row(r: ClientResult) -> dict[str, Any]:
    row = asdict(r)
    row.pop("final_points")
    row.pop("final_reasons")
    row.pop("final_timings")
    row["final_latency_s"] = _rounded(metrics.summarize(r.final_latencies_s))
    row["partial_lag_s"] = _rounded(metrics.summarize(r.partial_lags_s))
    row["wer"] = metrics.rounded(metrics.corpus_wer([(r.reference, r.transcript)]))
    del row["final_latencies_s"], row["partial_lags_s"]
    row["max_send_late_s"] = round(r.max_send_late_s, 3)
    row["finish_s"] = metrics.rounded(r.finish_s)
    return row


def _rounded(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="ws://host:port of a running server")
    parser.add_argument(
        "--protocol",
        choices=["native", "deepgram", "openai_realtime", "whisperlive", "whisperlivekit"],
        default="native",
    )
    parser.add_argument("--clients", default="1,2,4", help="comma-separated concurrency levels")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of audio per client (0: whole files)")
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--endpointing-ms", type=int, default=500)
    parser.add_argument("--workload", choices=["long", "turns"], default="long")
    args = parser.parse_args(argv)
    ours = ("native", "deepgram", "openai_realtime")
    options = {"endpointing_ms": args.endpointing_ms} if args.protocol in ours else {}
    if args.workload == "turns":
        from .workloads import Turns, load_turn_utterances

        turns = Turns(tuple(load_turn_utterances(default_audio_dir())), args.duration or 60.0)
    else:
        recordings = load_long_recordings()
    for n in [int(x) for x in args.clients.split(",")]:
        if args.workload == "turns":
            excerpts = turns.excerpts(n)
        else:
            excerpts = plan_excerpts(recordings, n, args.duration or None)
        level = asyncio.run(
            run_level(args.protocol, args.url, AdapterConfig(args.protocol, options), excerpts, args.chunk_ms)
        )
        row = level.to_json()
        row.pop("per_client")
        print(json.dumps(row))
        if not level.passed:
            break


if __name__ == "__main__":
    main()
