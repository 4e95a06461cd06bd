"""One channel of a session: its resampler, VAD, utterances, partial cadence, rolling prompt and finals.

Per channel, utterances go ``open -> ended -> finalizing -> done`` (``utterance.py``): the VAD segmenter
opens one (``SpeechStarted``); every ``partial_interval_ms`` of new audio asks for a partial decode of the
whole utterance so far; when it ends (``SpeechEnded``) it asks for exactly one final decode, in order with the
channel's other finals (``finals.py``). A partial for an utterance whose final was already requested, or older
than one already shown, is dropped. Times are stream seconds: samples of this channel after resampling to
16 kHz, divided by 16 000.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..audio import Resampler
from ..decode.types import FALLBACK_TEMPERATURES, SAMPLE_RATE, DecodeJob, DecodeOptions, DecodeResult, JobKind, Word
from .context import ContextSelector
from .events import (
    DecodeError,
    DecodePurpose,
    DecodeRequested,
    EndReason,
    Final,
    Partial,
    SessionEvent,
    SpeechEnded,
    SpeechStarted,
)
from .finals import FinalQueue
from .params import StreamParams
from .policy import SessionPolicy
from .prompt import RollingPrompt
from .segmenter import SegmenterConfig, SpeechClassifier, UtteranceEnded, UtteranceStarted, VadSegmenter
from .utterance import Utterance, UtteranceState

# Whisper on under a second of speech mostly guesses; the first partial waits for this much audio.
MIN_PARTIAL_AUDIO_S = 1.0
# No partial is asked for while the speaker pauses (this much unvoiced audio since the last voiced frame): it
# would add a word at most, and would hold up the final's speculative decode if the pause ends the utterance.
PARTIAL_PAUSE_MS = 90
# Why the segmenter ended an utterance, as clients see it ("flush": finalize or close, the caller knows which).
_END_REASONS: dict[str, EndReason] = {"endpoint": "endpoint", "pause": "endpoint", "max_length": "max_length"}


class Channel:
    """One independent stream. Not thread-safe; owned by its ``StreamingSession``."""

    def __init__(
        self,
        index: int,
        session_id: str,
        params: StreamParams,
        policy: SessionPolicy,
        classifier: SpeechClassifier | None,
    ) -> None:
        self.index = index
        self.session_id = session_id
        self.params = params
        self.policy = policy
        self._resampler: Resampler | None = None  # made once the input rate is known
        self.segmenter = VadSegmenter(
            SegmenterConfig(
                aggressiveness=policy.vad_aggressiveness,
                endpointing_ms=params.endpointing_ms,
                max_utterance_s=policy.max_utterance_s,
                soft_max_utterance_s=policy.soft_max_utterance_s,
            ),
            classifier,
        )
        self.prompt = RollingPrompt(params.prompt, policy.prompt_max_tokens, policy.prompt_reset_silence_s)
        self.context = ContextSelector(policy, self.prompt)
        self.next_utterance_id = 0
        self.open: Utterance | None = None
        self.utterances: dict[int, Utterance] = {}  # not yet finalized (open or awaiting the final)
        self.last_language: str | None = None  # of the newest final
        self.partial_options = DecodeOptions(
            task=params.task,
            language=params.language,
            languages=params.languages,
            beam_size=policy.partial_beam_size,
            initial_prompt=params.prompt or None,
        )
        final_options = replace(
            self.partial_options,
            beam_size=policy.final_beam_size,
            temperatures=FALLBACK_TEMPERATURES,
            word_timestamps=params.word_timestamps,
        )
        late_options = replace(final_options, beam_size=policy.late_final_beam_size)
        self.finals = FinalQueue(
            index,
            session_id,
            self.context,
            final_options,
            late_options if late_options != final_options else None,
            self._deliver,
        )

    @property
    def pending_finals(self) -> int:
        return len(self.utterances) - (1 if self.open else 0)

    @property
    def samples_seen(self) -> int:
        return self.segmenter.samples_seen

    def feed(self, samples: np.ndarray, rate: int) -> list[SessionEvent]:
        """Mono float32 ``samples`` at ``rate`` Hz (the same rate on every call)."""
        if self._resampler is None:
            self._resampler = Resampler(rate)
        events: list[SessionEvent] = []
        for seg_event in self._push(self._resampler(samples)):
            events.extend(self._on_segment(seg_event, "endpoint"))
        events.extend(self._maybe_partial())
        events.extend(self._maybe_speculate())
        return events

    def flush(self, reason: EndReason) -> list[SessionEvent]:
        """End the open utterance (``finalize``); at ``close`` also drain the resampler's last samples first."""
        events: list[SessionEvent] = []
        tail = []
        if reason == "close" and self._resampler is not None:
            tail = self._push(self._resampler.flush())
        for seg_event in tail + self.segmenter.flush():
            events.extend(self._on_segment(seg_event, reason))
        return events

    def clear(self) -> None:
        """Discard the open utterance and the audio received so far; ended utterances keep their finals."""
        if self.open is not None:
            self.open.move(UtteranceState.DISCARDED)
            del self.utterances[self.open.utterance_id]
            self.open = None
        self.segmenter.clear()
        self.context.reset(self.samples_seen)

    def _push(self, samples: np.ndarray) -> list[UtteranceStarted | UtteranceEnded]:
        self.context.push(samples)
        return self.segmenter.push(samples)

    def _on_segment(self, event: UtteranceStarted | UtteranceEnded, flush_reason: EndReason) -> list[SessionEvent]:
        if isinstance(event, UtteranceStarted):
            utt = Utterance(
                self.next_utterance_id,
                event.start_sample,
                event.speech_sample,
                samples_at_last_partial=event.start_sample,
            )
            self.next_utterance_id += 1
            self.open = utt
            self.utterances[utt.utterance_id] = utt
            return [SpeechStarted(self.index, utt.utterance_id, event.speech_sample / SAMPLE_RATE)]
        ended = self.open
        if ended is None or ended.start_sample != event.start_sample:
            raise RuntimeError(f"channel {self.index}: the segmenter ended an utterance that is not open")
        self.open = None
        ended.move(UtteranceState.ENDED)
        ended.ended = event
        ended.end_sample = event.speech_end_sample
        ended.decided_sample = max(self.samples_seen, ended.end_sample)
        reason = _END_REASONS.get(event.reason, flush_reason)
        ended.end_reason = reason
        speech_ended = SpeechEnded(
            self.index, ended.utterance_id, ended.end_sample / SAMPLE_RATE, reason, ended.decided_sample / SAMPLE_RATE
        )
        return [speech_ended, *self.finals.end(ended)]

    def _maybe_speculate(self) -> list[SessionEvent]:
        utt, span = self.open, self.segmenter.pending_end()
        if utt is None or span is None:
            return []
        start, end = span
        return self.finals.speculate(utt, start, end, self.segmenter.final_audio)

    def _maybe_partial(self) -> list[SessionEvent]:
        utt = self.open
        if utt is None or not self.params.interim_results:
            return []
        now = self.segmenter.samples_seen
        if now - utt.samples_at_last_partial < self.policy.partial_interval_ms * SAMPLE_RATE // 1000:
            return []
        if now - utt.start_sample < MIN_PARTIAL_AUDIO_S * SAMPLE_RATE:
            return []
        if self.segmenter.trailing_silence_ms >= PARTIAL_PAUSE_MS:
            return []
        utt.samples_at_last_partial = now
        utt.partial_requests += 1
        job = DecodeJob(
            owner=self.session_id,
            kind=JobKind.PARTIAL,
            audio=self.segmenter.utterance_audio(),
            options=self.partial_options,
            prompt_text=self.prompt.text(),
            prompt_language=self.last_language,
            stream_key=(self.session_id, self.index, utt.utterance_id),
        )
        return [DecodeRequested(job, self.index, utt.utterance_id, DecodePurpose.PARTIAL, utt.partial_requests)]

    def on_partial(self, request: DecodeRequested, result: DecodeResult) -> list[SessionEvent]:
        utt = self.utterances.get(request.utterance_id)
        if utt is None or utt.state is not UtteranceState.OPEN or request.sequence <= utt.partial_shown:
            return []
        utt.partial_shown = request.sequence
        stable, shown = utt.agreement.update(result.text)
        start, end = utt.speech_sample / SAMPLE_RATE, utt.start_sample / SAMPLE_RATE + request.job.duration_s
        return [
            Partial(
                self.index, utt.utterance_id, start, end, shown, stable, result.language, result.language_probability
            )
        ]

    def on_final(self, request: DecodeRequested, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        return self.finals.on_final(request, result, error)

    def on_speculative(
        self, request: DecodeRequested, result: DecodeResult | None, error: str | None
    ) -> list[SessionEvent]:
        return self.finals.on_speculative(self.utterances.get(request.utterance_id), request, result, error)

    def _deliver(self, utt: Utterance, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        """A final's outcome as events: its ``Final`` (after a ``DecodeError`` if it failed)."""
        del self.utterances[utt.utterance_id]
        start, end = utt.speech_sample / SAMPLE_RATE, utt.end_sample / SAMPLE_RATE
        audio_start = utt.start_sample / SAMPLE_RATE  # word times are relative to the decoded audio
        events: list[SessionEvent] = []
        words: tuple[Word, ...] | None = None
        if result is None:
            events.append(DecodeError(self.index, utt.utterance_id, error or "decode failed"))
            text, language, probability = "", self.params.language or "", 0.0
        else:
            text, language, probability = result.text, result.language, result.language_probability
            if text and self.last_language is not None and language != self.last_language:
                self.prompt.clear()  # no text of one language is carried into another, as prompt or context
            if text:  # (an empty final's language is a guess on noise)
                self.last_language = self.finals.prompt_language = language
            suspicious = result.looks_hallucinated(self.finals.options)
            self.prompt.commit(text, end, suspicious=suspicious, start_s=audio_start)
            if self.params.word_timestamps:
                words = tuple(
                    Word(w.word, round(audio_start + w.start, 3), round(audio_start + w.end, 3), w.probability)
                    for w in result.words
                )
        waited = (utt.decided_sample - utt.end_sample) / SAMPLE_RATE
        timing = None if result is None else result.timing
        events.append(
            Final(
                self.index,
                utt.utterance_id,
                start,
                end,
                text,
                language,
                words,
                utt.end_reason,
                probability,
                waited,
                timing,
            )
        )
        return events
