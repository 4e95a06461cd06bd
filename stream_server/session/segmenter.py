"""VAD utterance segmenter: 16 kHz float32 samples in, utterance boundaries (with their audio) out.

Theory of operation. Audio is cut into 30 ms frames. A frame is *voiced* when the speech classifier says
so: by default ``webrtc_classifier``, which asks webrtcvad only about frames that stand out of the noise
floor (``LevelGate``: webrtcvad alone marks hum, dither and white noise as speech) and hands it every frame
brought to a fixed level, so that detection does not depend on how loud the recording is (quiet telephone
and far-field speech). Speech starts
once ``start_voiced_frames`` of the last ``start_window_frames`` frames are voiced; the utterance then
begins ``preroll_ms`` before the first of those frames so the first word is not clipped. It ends after
``endpointing_ms`` of unvoiced frames and keeps ``tail_ms`` of that silence (Whisper drops final words of
audio cut right at the last phoneme), of which only the first ``heard_tail_ms`` is the stream's audio and the
rest digital silence: the final's audio is then complete early in the pause (speculative finals). An utterance
reaching ``max_utterance_s`` is cut at its quietest frame in the last ``cut_search_s`` seconds; the remainder
goes on as a new utterance at once. With ``endpointing_ms`` None no silence ends an utterance: only ``flush``
(the client's commit) and the length cut do.

Pure: no I/O, no clock. The webrtcvad call is injected so tests can drive decisions directly. The segmenter
owns one preallocated buffer holding the open utterance (plus pre-roll); it never grows per chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..decode.types import SAMPLE_RATE

FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

SpeechClassifier = Callable[[np.ndarray], bool]


# Silence a pause-ended final keeps after its last voiced frame (docs/decisions.md#speculative-finals). Only the
# first HEARD_TAIL_MS of it is the stream's audio, the rest digital silence, so the final's audio is complete, and
# its speculative decode starts, HEARD_TAIL_MS into the pause: endpointing_ms - HEARD_TAIL_MS before the end is
# certain.
TAIL_MS = 300
HEARD_TAIL_MS = 200


@dataclass(frozen=True)
class SegmenterConfig:
    """The first four are settings (``SessionPolicy``, ``StreamParams``); the rest are the segmenter's own."""

    aggressiveness: int
    endpointing_ms: int | None  # None: silence never ends an utterance
    max_utterance_s: float
    # Past soft_max_utterance_s a shorter pause ends the utterance. Long utterances cost twice: each partial
    # re-decodes the whole utterance (quadratic in its length) and the final's decode grows with it.
    soft_max_utterance_s: float  # 0: off
    preroll_ms: int = 300
    tail_ms: int = TAIL_MS
    heard_tail_ms: int = HEARD_TAIL_MS
    start_window_frames: int = 6
    start_voiced_frames: int = 4
    cut_search_s: float = 3.0
    soft_endpointing_ms: int = 200
    # LevelGate (the default classifier's): a voiced frame stands speech_over_floor_db above the quietest
    # frame of the last noise_floor_window_s and above min_speech_rms (-80 dBFS: dither, digital silence).
    noise_floor_window_s: float = 3.0
    speech_over_floor_db: float = 6.0
    min_speech_rms: float = 10 ** (-80 / 20)


@dataclass(frozen=True)
class UtteranceStarted:
    start_sample: int  # absolute sample index in the stream, pre-roll included
    speech_sample: int  # first voiced sample (for speech.started)


# "pause": the shorter pause past ``soft_max_utterance_s``; "flush": ``flush`` (finalize or end of stream)
SegmentEndReason = Literal["endpoint", "pause", "max_length", "flush"]


@dataclass(frozen=True)
class UtteranceEnded:
    start_sample: int
    end_sample: int  # end of the audio handed over (speech plus a short silent tail)
    speech_end_sample: int  # end of the last voiced frame: where the speaker stopped
    audio: np.ndarray  # float32 copy of [start_sample, end_sample), owned by the receiver
    reason: SegmentEndReason


SegmentEvent = UtteranceStarted | UtteranceEnded


class LevelGate:
    """Whether a frame stands out of the noise floor: at least ``over_floor_db`` louder than the quietest
    frame of the last ``window_frames`` (itself included) and than ``min_rms``.

    Steady noise, hum and tones vary by well under 1 dB from one 30 ms frame to the next, so after their
    first frame they never pass, whatever their level; speech rises 10-30 dB out of its own pauses at any
    level. The floor follows a rising noise within ``window_frames``.
    """

    def __init__(self, window_frames: int, over_floor_db: float, min_rms: float) -> None:
        self._recent: deque[float] = deque(maxlen=max(1, window_frames))
        self._over_floor = 10 ** (over_floor_db / 20)
        self._min_rms = min_rms

    def loud_enough(self, rms: float) -> bool:
        self._recent.append(rms)
        return rms >= max(self._min_rms, min(self._recent) * self._over_floor)


# Streams at a usual level keep the rule every figure of this project was measured with: a frame is speech when
# it is above -50 dBFS and webrtcvad says so. A quiet stream (its loudest frame of the last few seconds under
# -35 dBFS: telephone or far-field audio) would lose its speech to that floor, so there a frame must instead stand
# out of the stream's own noise floor (LevelGate), and webrtcvad, which judges loudness too, hears the stretch
# brought up by one gain so that its loudest frame is at -26 dBFS (by at most 50 dB). One gain for the stretch,
# not one per frame: pauses brought up to speech level sound like speech. Applying the relative rule to every
# stream held utterances open longer and cost capacity (16 streams of turns: p95 1.10 -> 1.68 s); see
# docs/decisions.md#energy-floor.
FIXED_FLOOR_RMS = 10 ** (-50 / 20)
QUIET_STREAM_RMS = 10 ** (-35 / 20)
VAD_TARGET_RMS = 10 ** (-26 / 20)
VAD_MAX_GAIN = 10 ** (50 / 20)


def webrtc_classifier(aggressiveness: int, config: SegmenterConfig | None = None) -> SpeechClassifier:
    """webrtcvad with the level rule above, for one channel (it keeps the channel's recent levels)."""
    import webrtcvad

    source: SegmenterConfig | type[SegmenterConfig] = config or SegmenterConfig  # the gate's defaults
    vad = webrtcvad.Vad(aggressiveness)
    window = int(source.noise_floor_window_s * 1000 // FRAME_MS)
    gate = LevelGate(window, source.speech_over_floor_db, source.min_speech_rms)
    recent: deque[float] = deque(maxlen=max(1, window))  # frame levels whose loudest says how loud the stream is

    def vad_says(frame: np.ndarray, gain: float) -> bool:
        pcm = (np.clip(frame * gain, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return bool(vad.is_speech(pcm, SAMPLE_RATE))

    def is_speech(frame: np.ndarray) -> bool:
        rms = float(np.sqrt(np.mean(frame * frame)))
        recent.append(rms)
        stands_out = gate.loud_enough(rms)  # called for every frame: the gate's floor follows the stream
        level = max(recent)
        if level >= QUIET_STREAM_RMS:
            return rms >= FIXED_FLOOR_RMS and vad_says(frame, 1.0)
        return stands_out and vad_says(frame, min(VAD_MAX_GAIN, VAD_TARGET_RMS / max(level, 1e-9)))

    return is_speech


class VadSegmenter:
    """Streaming segmenter for one channel. ``push`` any number of samples; events come out in order."""

    def __init__(self, config: SegmenterConfig, is_speech: SpeechClassifier | None = None) -> None:
        self.config = config
        self._is_speech = is_speech or webrtc_classifier(config.aggressiveness, config)
        self._preroll = config.preroll_ms * SAMPLE_RATE // 1000
        self._tail = config.tail_ms * SAMPLE_RATE // 1000
        self._heard_tail = min(config.heard_tail_ms, config.tail_ms) * SAMPLE_RATE // 1000
        endpointing = config.endpointing_ms
        self._end_frames = None if endpointing is None else max(1, -(-endpointing // FRAME_MS))
        self._soft_end_frames = max(1, -(-config.soft_endpointing_ms // FRAME_MS))
        # no pause ends an utterance without endpointing, not even the shorter one past the soft limit
        soft_max = int(config.soft_max_utterance_s * SAMPLE_RATE) if endpointing is not None else 0
        self._soft_max_samples = soft_max or None
        capacity = int((config.max_utterance_s + 2.0) * SAMPLE_RATE) + 2 * self._preroll + FRAME_SAMPLES
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._buf_len = 0
        self._processed = 0  # absolute index of the next sample to frame
        self._recent: deque[bool] = deque(maxlen=config.start_window_frames)
        self._utt_start: int | None = None
        self._last_end = 0  # utterances never overlap: the pre-roll stops at the previous end
        self._last_voiced_end = 0
        self._silent_frames = 0
        self._frame_rms: list[float] = []  # per frame of the open utterance, for the max-length cut

    @property
    def in_speech(self) -> bool:
        return self._utt_start is not None

    @property
    def samples_seen(self) -> int:
        return self._buf_start + self._buf_len

    @property
    def trailing_silence_ms(self) -> int:
        """Unvoiced time since the open utterance's last voiced frame (0 while speech goes on)."""
        return self._silent_frames * FRAME_MS if self._utt_start is not None else 0

    @property
    def utterance_start(self) -> int | None:
        return self._utt_start

    def pending_end(self) -> tuple[int, int] | None:
        """``(start_sample, end_sample)`` of the audio the open utterance will hand over if the pause under way
        ends it, known once ``heard_tail_ms`` of silence followed its last voiced frame; else None (always None
        when no pause can end it). ``final_audio`` gives that audio."""
        if self._utt_start is None or self._end_frames is None:
            return None
        if self._silent_frames * FRAME_SAMPLES < self._heard_tail:
            return None
        return self._utt_start, self._tail_end

    @property
    def _tail_end(self) -> int:
        """Where a pause-ended utterance's audio stops: ``tail_ms`` after its last voiced frame (the speculative
        final relies on both ends computing it here)."""
        return self._last_voiced_end + self._tail

    def final_audio(self, start: int, end: int) -> np.ndarray:
        """A pause-ended final's audio ``[start, end)``: the stream's up to ``heard_tail_ms`` after the last voiced
        frame, digital silence after it (the same whether asked during the pause or at its end)."""
        heard_end = max(start, min(end, self._last_voiced_end + self._heard_tail))
        audio = np.zeros(end - start, dtype=np.float32)
        audio[: heard_end - start] = self._slice(start, heard_end)
        return audio

    def utterance_audio(self) -> np.ndarray:
        """A copy of the open utterance so far (empty when none is open)."""
        if self._utt_start is None:
            return np.zeros(0, dtype=np.float32)
        return self._slice(self._utt_start, self.samples_seen)

    def push(self, samples: np.ndarray) -> list[SegmentEvent]:
        events: list[SegmentEvent] = []
        offset = 0
        while offset < len(samples):
            room = len(self._buf) - self._buf_len
            if room == 0:
                self._compact(force=True)
                room = len(self._buf) - self._buf_len
            take = min(room, len(samples) - offset)
            self._buf[self._buf_len : self._buf_len + take] = samples[offset : offset + take]
            self._buf_len += take
            offset += take
            while self.samples_seen - self._processed >= FRAME_SAMPLES:
                events.extend(self._on_frame(self._processed))
                self._processed += FRAME_SAMPLES
            self._compact()
        return events

    def flush(self) -> list[SegmentEvent]:
        """End the open utterance now (client ``finalize``/``close_stream``), keeping all audio received."""
        if self._utt_start is None:
            return []
        return [self._end(self.samples_seen, "flush")]

    def clear(self) -> None:
        """Discard the open utterance and the audio received so far; the next utterance starts after it."""
        self._utt_start = None
        self._last_end = self.samples_seen
        self._recent.clear()
        self._silent_frames = 0
        self._frame_rms = []

    # --- internals

    def _slice(self, start: int, end: int) -> np.ndarray:
        audio: np.ndarray = self._buf[start - self._buf_start : end - self._buf_start].copy()
        return audio

    def _on_frame(self, frame_start: int) -> list[SegmentEvent]:
        frame = self._buf[frame_start - self._buf_start : frame_start - self._buf_start + FRAME_SAMPLES]
        rms = float(np.sqrt(np.mean(frame * frame)))
        voiced = self._is_speech(frame)
        frame_end = frame_start + FRAME_SAMPLES
        self._recent.append(voiced)
        if self._utt_start is None:
            if sum(self._recent) < self.config.start_voiced_frames:
                return []
            first_voiced = frame_end - FRAME_SAMPLES * len(self._recent)
            first_voiced += FRAME_SAMPLES * list(self._recent).index(True)
            self._utt_start = max(self._buf_start, self._last_end, first_voiced - self._preroll)
            self._last_voiced_end = frame_end
            self._silent_frames = 0
            self._frame_rms = []
            return [UtteranceStarted(self._utt_start, first_voiced)]
        self._frame_rms.append(rms)
        if voiced:
            self._last_voiced_end = frame_end
            self._silent_frames = 0
        else:
            self._silent_frames += 1
            if self._end_frames is not None and self._silent_frames >= self._end_frames:
                return [self._end(min(frame_end, self._tail_end), "endpoint")]
            if (
                self._soft_max_samples is not None
                and self._silent_frames >= self._soft_end_frames
                and self._last_voiced_end - self._utt_start >= self._soft_max_samples
            ):
                return [self._end(min(frame_end, self._tail_end), "pause")]
        if frame_end - self._utt_start >= self.config.max_utterance_s * SAMPLE_RATE:
            return self._cut_at_quietest(frame_end)
        return []

    def _end(self, end_sample: int, reason: SegmentEndReason) -> UtteranceEnded:
        if self._utt_start is None:
            raise RuntimeError("no utterance is open")
        speech_end = min(end_sample, max(self._last_voiced_end, self._utt_start))
        if reason in ("endpoint", "pause"):
            audio = self.final_audio(self._utt_start, end_sample)
        else:
            audio = self._slice(self._utt_start, end_sample)
        event = UtteranceEnded(self._utt_start, end_sample, speech_end, audio, reason)
        self._utt_start = None
        self._last_end = end_sample
        self._recent.clear()
        self._frame_rms = []
        return event

    def _cut_at_quietest(self, frame_end: int) -> list[SegmentEvent]:
        search = max(1, int(self.config.cut_search_s * 1000 // FRAME_MS))
        tail = self._frame_rms[-search:]
        quietest = len(self._frame_rms) - len(tail) + int(np.argmin(tail))
        # _frame_rms[i] is the frame ending (len - i - 1) frames before frame_end.
        cut = frame_end - FRAME_SAMPLES * (len(self._frame_rms) - quietest) + FRAME_SAMPLES // 2
        ended = self._end(cut, "max_length")
        self._utt_start = cut
        self._last_voiced_end = frame_end
        self._silent_frames = 0
        self._frame_rms = []
        return [ended, UtteranceStarted(cut, cut)]

    def _compact(self, force: bool = False) -> None:
        """Drop audio nobody needs any more: everything before the open utterance, or before the pre-roll."""
        keep_from = self._utt_start if self._utt_start is not None else self._processed - self._preroll
        keep_from = max(self._buf_start, min(keep_from, self._processed))
        drop = keep_from - self._buf_start
        if drop <= 0 or (not force and drop < len(self._buf) // 4):
            return
        remaining = self._buf_len - drop
        self._buf[:remaining] = self._buf[drop : self._buf_len]
        self._buf_start += drop
        self._buf_len = remaining


def split_utterances(
    audio: np.ndarray, *, max_utterance_s: float, endpointing_ms: int, aggressiveness: int
) -> list[tuple[int, int]]:
    """Offline use: sample ranges ``[start, end)`` of the utterances in ``audio`` (16 kHz float32, or int16
    converted 10 s at a time)."""
    segmenter = VadSegmenter(
        SegmenterConfig(
            aggressiveness=aggressiveness,
            endpointing_ms=endpointing_ms,
            max_utterance_s=max_utterance_s,
            soft_max_utterance_s=0.0,  # offline: long utterances cost no partials
        )
    )
    ranges: list[tuple[int, int]] = []
    step = SAMPLE_RATE * 10
    for offset in range(0, len(audio), step):
        piece = audio[offset : offset + step]
        if piece.dtype == np.int16:
            piece = piece.astype(np.float32) * np.float32(1 / 32768)
        for event in segmenter.push(piece):
            if isinstance(event, UtteranceEnded):
                ranges.append((event.start_sample, event.end_sample))
    for event in segmenter.flush():
        if isinstance(event, UtteranceEnded):
            ranges.append((event.start_sample, event.end_sample))
    return ranges
