"""The benchmark's results as typed, frozen records, written to and read from the JSON in ``benchmarks/results/``.

``to_json`` gives the JSON shape every earlier run has (``stream_<device>_<mode>.json``), and ``from_json``
reads those files back, old ones included: keys a record does not model are kept in ``extra`` and written
back unchanged, and optional keys that are absent stay absent. Sub-trees that are plain measurements with no
rules attached (server resources, per-client rows, machine, versions, the core benchmark) stay dicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

Json = dict[str, Any]
T = TypeVar("T")

# keys written only when they have a value (absent from older files or from systems that did not run)
_OPTIONAL = frozenset(
    {
        "offline_wer_same_audio",
        "startup_s",
        "stopped",
        "command",
        "server_log_tail",
        "reason",
        "traceback_tail",
        "wer_pooled",
        "offline_faster_whisper_wer_same_audio",
        "wer_minus_offline_points",
        "decode_core",
        "offline_reference",
        "summary",
        "summary_markdown",
        "measure_seconds",
        "loadavg_1m_end",
        "budget_s",
        "interrupted",
        "workload",
        "search",
        "final_reasons",
        "final_latency_by_reason_s",
        "nonspeech",
        "single_stream",
        "latency_breakdown_s",
    }
)


def _to_json(record: Any) -> Json:
    out: Json = {}
    for f in dataclasses.fields(record):
        if f.name == "extra":
            continue
        value = getattr(record, f.name)
        if value is None and f.name in _OPTIONAL:
            continue
        if isinstance(value, list):
            value = [v.to_json() if hasattr(v, "to_json") else v for v in value]
        elif isinstance(value, Mapping):
            value = {k: (v.to_json() if hasattr(v, "to_json") else v) for k, v in value.items()}
        out[f.name] = value
    out.update(record.extra)
    return out


def _split(cls: type[Any], data: Mapping[str, Any]) -> tuple[Json, Json]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    return known, {k: v for k, v in data.items() if k not in names}


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level of one system: every client streamed at once."""

    system: str
    clients: int
    chunk_ms: int
    wall_s: float
    audio_s: float
    final_latency_s: Json  # metrics.summarize: count, p50, p95, p99, mean, max
    partial_lag_s: Json
    latency_slope: float | None
    wer: float | None
    kept_up: bool
    passed: bool
    finish_s_max: float | None
    client_errors: list[str]
    client_warnings: list[str]
    server: Json = field(default_factory=dict)  # CPU, RSS, scheduler stats
    per_client: list[Json] = field(default_factory=list)
    offline_wer_same_audio: float | None = None
    workload: str | None = None  # "long" when absent (files before the turns workload)
    final_reasons: Json | None = None  # why finals ended -> count, when the protocol says
    final_latency_by_reason_s: Json | None = None  # reason -> metrics.summarize
    latency_breakdown_s: Json | None = None  # metrics.latency_breakdown of every final, and by reason
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LevelResult:
        known, extra = _split(cls, data)
        return cls(**known, extra=extra)


@dataclass(frozen=True)
class SystemResult:
    """One system's sweep: its levels and what they add up to."""

    label: str
    protocol: str | None = None
    notes: list[str] = field(default_factory=list)
    levels: list[LevelResult] = field(default_factory=list)
    workload: str | None = None  # "long" when absent (files before the turns workload)
    startup_s: float | None = None
    stopped: str | None = None
    command: list[str] | None = None  # the server's argv: every flag it ran with
    status: str | None = None
    reason: str | None = None
    traceback_tail: list[str] | None = None
    server_log_tail: str | None = None
    capacity: int | None = None
    max_streams_kept_up: int | None = None
    search: list[Json] | None = None  # the capacity search: each level tried, why, and its outcome
    single_stream: Json | None = None  # latency of one stream from enough finals (turns workload)
    nonspeech: Json | None = None  # words per minute on each kind of non-speech
    wer_pooled: float | None = None
    offline_faster_whisper_wer_same_audio: float | None = None
    wer_minus_offline_points: float | None = None
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SystemResult:
        known, extra = _split(cls, data)
        known["levels"] = [LevelResult.from_json(lv) for lv in known.get("levels", [])]
        return cls(**known, extra=extra)


@dataclass(frozen=True)
class RunResult:
    """A whole ``python -m benchmarks.run``: what ran where, every system, the summary."""

    kind: str
    date_utc: str
    mode: str
    plan: Json
    machine: Json
    model: Json
    versions: Json
    endpointing_ms: int
    definitions: str | None
    audio_dir: str
    loadavg_1m_start: float
    install: Json
    systems: dict[str, SystemResult]
    budget_s: float | None = None
    decode_core: Json | None = None
    offline_reference: Json | None = None
    summary: Json | None = None
    summary_markdown: str | None = None
    measure_seconds: float | None = None
    loadavg_1m_end: float | None = None
    interrupted: bool | None = None
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        known, extra = _split(cls, data)
        known["systems"] = {k: SystemResult.from_json(v) for k, v in known.get("systems", {}).items()}
        return cls(**known, extra=extra)


def replace(record: T, **changes: Any) -> T:
    """``dataclasses.replace`` for these records (they are frozen)."""
    return dataclasses.replace(record, **changes)  # type: ignore[type-var]
