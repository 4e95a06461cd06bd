"""The server's streaming policy for one session: how often partials run, how finals are decoded, how long an
utterance may grow. Built from ``Settings.session_policy()``; no field has a default here, so a session in a
test or a notebook behaves like the server's only when it is given the server's values."""

from __future__ import annotations

from dataclasses import dataclass

# Whisper's encoder window: a final with acoustic context must fit it, with the backend's margin of silence.
WHISPER_WINDOW_S = 30.0
# Room left in that window besides the margin, so rounding of the utterance's tail never pushes it over.
CONTEXT_SLACK_S = 1.0


@dataclass(frozen=True)
class SessionPolicy:
    partial_interval_ms: int  # new audio between partial decodes of the open utterance
    max_utterance_s: float  # longer utterances are cut at a quiet point
    soft_max_utterance_s: float  # past this a short pause already ends an utterance (0: off)
    vad_aggressiveness: int  # webrtcvad mode 0..3
    prompt_max_tokens: int  # rolling prompt bound (tokens, approximately)
    prompt_reset_silence_s: float  # silence after which the rolling prompt is dropped
    partial_beam_size: int
    final_beam_size: int  # beam of a final that did not wait for the model
    late_final_beam_size: int  # beam of a final that waited (``DecodeJob.late_options``)
    final_context_s: float  # seconds of earlier speech a final's decode also hears (0: none)
    window_margin_s: float  # the backend's silence after the audio in the encoder window

    @property
    def context_window_s(self) -> float:
        """Longest audio (context plus utterance) a final with context may hand the backend."""
        return WHISPER_WINDOW_S - self.window_margin_s - CONTEXT_SLACK_S
