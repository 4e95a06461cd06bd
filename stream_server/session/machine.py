"""The streaming session: a sans-I/O state machine (in the manner of python-websockets and h11).

The transport feeds it bytes and decode outcomes and performs the events it returns; the session never
awaits, never touches a socket, never calls the model and never reads a clock. Times are stream seconds:
samples received on a channel (after resampling to 16 kHz) divided by 16 000.

Per channel, utterances go ``(idle) -> open -> finalizing -> done``:
- the VAD segmenter opens one (``SpeechStarted``), every ``partial_interval_ms`` of new audio asks for a
  partial decode of the whole utterance so far, and when it ends asks for exactly one final decode;
- finals are decoded one at a time per channel, in ``utterance_id`` order, so they also leave in that order;
  a partial for an utterance whose final was already requested, or older than one already shown, is dropped;
- speculative finals: once ``tail_ms`` of a pause has passed, the audio the final would get if the pause ends
  the utterance is complete, so its final decode is asked for then (same audio, prompt and options as the
  real one), ``endpointing_ms - tail_ms`` before the end is certain. If the pause does end the utterance,
  that decode *is* the final (sent at once if it is back); if speech resumes, it is ignored. Measured on 2
  cores at 4 streams: the final decode no longer starts after the endpointing silence but during it.
- acoustic context (``final_context_s`` > 0): a final's decode also hears up to that much of the stream before
  the utterance, from the start of an earlier final on, and that text is forced as the start of its transcript
  (``DecodeJob.context_*``). Whisper was trained on 30 s windows whose earlier speech it had transcribed; a
  fragment cut out by endpointing, decoded alone, loses words at its edges and spells names and compounds
  differently from one final to the next. The finals that form the context leave the rolling prompt for that
  decode (their text is in the prefix instead). Measured over the four long recordings of ../shared/audio
  (24 min; session and backend without a network, tiny.en int8): greedy finals 10.9% -> 9.35% with 10 s of
  context (no better with 25 s), 8.76% with beam 5 as well, against 8.92% for faster-whisper offline (beam 5);
  the encoder hears 1.9x the audio per final. The engine drops the context when the server is busy, and the
  idle beam for a final that had to wait (``engine.py``), so under load they cost accuracy, not capacity.
Session states: ``OPEN -> CLOSING (close_stream) -> CLOSED``; audio after ``close_stream`` is a protocol error.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from ..audio import Encoding, PcmDecoder, Resampler
from ..decode.types import (
    FALLBACK_TEMPERATURES,
    SAMPLE_RATE,
    DecodeJob,
    DecodeOptions,
    DecodeResult,
    JobKind,
    Task,
    Word,
)
from ..errors import InvalidParameter, ProtocolError
from .agreement import StablePrefix
from .events import DecodeError, DecodePurpose, DecodeRequested, Final, Partial, SessionEvent, SpeechStarted
from .history import AudioHistory
from .prompt import RollingPrompt
from .segmenter import SegmenterConfig, SpeechClassifier, UtteranceEnded, UtteranceStarted, VadSegmenter

# Whisper on under a second of speech mostly guesses (seen: "That what? That what? ..." for 0.5 s); the first
# partial waits for this much audio.
MIN_PARTIAL_AUDIO_S = 1.0
# No partial is asked for while the speaker pauses (this much unvoiced audio since the last voiced frame): it
# would add at most the last word or two, and if the pause ends the utterance, its decode would hold up the
# final's (speculative) decode. A partial is asked for as soon as speech resumes.
PARTIAL_PAUSE_MS = 90
# A final with context must fit Whisper's 30 s window with the backend's margin of silence after it.
CONTEXT_WINDOW_S = 28.0


@dataclass(frozen=True)
class StreamConfig:
    """One session's settings: protocol v1 query parameters plus the server's streaming policy."""

    sample_rate: int = SAMPLE_RATE
    encoding: Encoding = "pcm_s16le"
    channels: int = 1
    language: str | None = None
    languages: tuple[str, ...] = ()  # detection limited to these codes (empty: any)
    task: Task = "transcribe"
    prompt: str = ""
    interim_results: bool = True
    word_timestamps: bool = False
    endpointing_ms: int = 500
    partial_interval_ms: int = 500
    max_utterance_s: float = 25.0
    soft_max_utterance_s: float = 8.0
    vad_aggressiveness: int = 2
    prompt_max_tokens: int = 200
    prompt_reset_silence_s: float = 30.0
    final_beam_size: int = 1
    partial_beam_size: int = 1
    final_context_s: float = 0.0  # seconds of earlier speech a final's decode hears (0: none)
    idle_final_beam_size: int = 0  # beam size for finals the server is not behind on (0: final_beam_size)

    def validate(self) -> StreamConfig:
        if not 8000 <= self.sample_rate <= 48000:
            raise InvalidParameter("sample_rate must be between 8000 and 48000", param="sample_rate")
        if not 1 <= self.channels <= 8:
            raise InvalidParameter("channels must be between 1 and 8", param="channels")
        if self.task not in ("transcribe", "translate"):
            raise InvalidParameter("task must be 'transcribe' or 'translate'", param="task")
        if not 100 <= self.endpointing_ms <= 10000:
            raise InvalidParameter("endpointing_ms must be between 100 and 10000", param="endpointing_ms")
        if self.language is not None and not (2 <= len(self.language) <= 3 and self.language.isalpha()):
            raise InvalidParameter("language must be an ISO-639-1 code such as 'en'", param="language")
        for code in self.languages:
            if not (2 <= len(code) <= 3 and code.isalpha()):
                raise InvalidParameter("languages must be ISO-639-1 codes such as 'en,es'", param="languages")
        return self


class SessionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass
class _Utterance:
    utterance_id: int
    start_sample: int  # first sample of its audio (pre-roll included)
    speech_sample: int  # first voiced sample: the ``start`` clients see
    partial_requests: int = 0
    partial_shown: int = 0  # sequence number of the newest partial delivered
    samples_at_last_partial: int = 0
    final_requested: bool = False
    end_sample: int = 0
    agreement: StablePrefix = field(default_factory=StablePrefix)
    speculation: _Speculation | None = None


@dataclass
class _Speculation:
    """A final decode asked for during a pause, for audio ``[start_sample, end_sample)``."""

    job_id: int
    start_sample: int
    end_sample: int
    context: _Context
    result: DecodeResult | None = None


@dataclass(frozen=True)
class _Context:
    """What a final is decoded with besides its own audio: the rolling prompt, and the acoustic context."""

    prompt: str
    context_start: int  # first sample of the context audio (the utterance's own start: none)
    context_text: str


class _Channel:
    """One independent stream: its own VAD, utterance counter, rolling prompt and final ordering."""

    def __init__(self, index: int, config: StreamConfig, session_id: str, classifier: SpeechClassifier | None):
        self.index = index
        self.config = config
        self.session_id = session_id
        self.resampler = Resampler(config.sample_rate)
        self.segmenter = VadSegmenter(
            SegmenterConfig(
                aggressiveness=config.vad_aggressiveness,
                endpointing_ms=config.endpointing_ms,
                max_utterance_s=config.max_utterance_s,
                soft_max_utterance_s=config.soft_max_utterance_s,
            ),
            classifier,
        )
        self.prompt = RollingPrompt(config.prompt, config.prompt_max_tokens, config.prompt_reset_silence_s)
        # the context plus the longest utterance, and time for the finals before it to come back
        self.history = (
            AudioHistory(config.final_context_s + config.max_utterance_s + 5.0) if config.final_context_s > 0 else None
        )
        self.next_utterance_id = 0
        self.language: str | None = None  # of the last final: the language of the rolling prompt's text
        self.open: _Utterance | None = None
        self.utterances: dict[int, _Utterance] = {}  # not yet finalized (open or awaiting the final)
        # One final decode at a time per channel, in order: each is decoded with the text of every earlier one
        # in its prompt, so a transcript never depends on how busy the server was (seen at 8+ streams on 2
        # cores: a final decoded before the previous one was back lacked its context and came out worse).
        self.final_in_flight: int | None = None
        self.deferred: deque[tuple[_Utterance, UtteranceEnded]] = deque()
        partial_opts = DecodeOptions(
            task=config.task,
            language=config.language,
            languages=config.languages,
            beam_size=config.partial_beam_size,
            initial_prompt=config.prompt or None,
        )
        self.partial_options = partial_opts
        self.final_options = replace(
            partial_opts,
            beam_size=config.final_beam_size,
            temperatures=FALLBACK_TEMPERATURES,
            word_timestamps=config.word_timestamps,
        )
        self.idle_final_options = replace(
            self.final_options, beam_size=config.idle_final_beam_size or config.final_beam_size
        )

    @property
    def pending_finals(self) -> int:
        return len(self.utterances) - (1 if self.open else 0)

    def feed(self, samples) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        for seg_event in self._push(self.resampler(samples)):
            events.extend(self._on_segment(seg_event))
        events.extend(self._maybe_partial())
        events.extend(self._maybe_speculate())
        return events

    def flush(self, end_of_stream: bool) -> list[SessionEvent]:
        """End the open utterance; at end of stream also drain the resampler's last samples first."""
        events: list[SessionEvent] = []
        tail = self._push(self.resampler.flush()) if end_of_stream else []
        for seg_event in tail + self.segmenter.flush():
            events.extend(self._on_segment(seg_event))
        return events

    def _push(self, samples) -> list[UtteranceStarted | UtteranceEnded]:
        if self.history is not None:
            self.history.push(samples)
        return self.segmenter.push(samples)

    def _context(self, start: int, end: int) -> _Context:
        """The prompt and acoustic context for a final over samples ``[start, end)``: the context starts where
        the earliest remembered final started that lies within ``final_context_s`` before ``start``, leaves
        the whole window under ``CONTEXT_WINDOW_S`` and is still held; its finals leave the prompt."""
        now_s = start / SAMPLE_RATE
        if self.history is None:
            return _Context(self.prompt.text(now_s), start, "")
        earliest = max(
            start - int(self.config.final_context_s * SAMPLE_RATE),
            end - int(CONTEXT_WINDOW_S * SAMPLE_RATE),
            self.history.start,
        )
        since = next((s for s in self.prompt.starts(now_s) if earliest <= round(s * SAMPLE_RATE) < start), None)
        if since is None:
            return _Context(self.prompt.text(now_s), start, "")
        prompt, context_text = self.prompt.split(since, now_s)
        return _Context(prompt, round(since * SAMPLE_RATE), context_text)

    def _on_segment(self, event: UtteranceStarted | UtteranceEnded) -> list[SessionEvent]:
        if isinstance(event, UtteranceStarted):
            utt = _Utterance(
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
        assert ended is not None and ended.start_sample == event.start_sample
        self.open = None
        return self._request_final(ended, event)

    @property
    def deferred_audio_s(self) -> float:
        return sum(len(event.audio) for _, event in self.deferred) / SAMPLE_RATE

    def _request_final(self, utt: _Utterance, event: UtteranceEnded) -> list[SessionEvent]:
        utt.final_requested = True
        utt.end_sample = event.speech_end_sample
        if self.final_in_flight is not None or self.deferred:
            self.deferred.append((utt, event))  # asked for once the finals before it are in
            return []
        return self._start_final(utt, event)

    def _start_final(self, utt: _Utterance, event: UtteranceEnded) -> list[SessionEvent]:
        context = self._context(event.start_sample, event.end_sample)
        spec = utt.speculation
        self.final_in_flight = utt.utterance_id
        if spec is not None and (spec.start_sample, spec.end_sample, spec.context) == (
            event.start_sample,
            event.end_sample,
            context,
        ):
            # the speculative decode is this final: delivered now if back, else when it is
            return self.on_final(utt.utterance_id, spec.result, None) if spec.result is not None else []
        utt.speculation = None
        job = self._final_job(utt, event.start_sample, event.audio, context)
        return [DecodeRequested(job, self.index, utt.utterance_id, DecodePurpose.FINAL)]

    def _final_job(self, utt: _Utterance, start: int, audio, context: _Context) -> DecodeJob:
        if context.context_start < start:
            assert self.history is not None
            audio = np.concatenate([self.history.audio(context.context_start, start), audio])
        return DecodeJob(
            owner=self.session_id,
            kind=JobKind.FINAL,
            audio=audio,
            options=self.idle_final_options,
            late_options=self.final_options if self.idle_final_options != self.final_options else None,
            prompt_text=context.prompt,
            prompt_language=self.language,
            stream_key=(self.session_id, self.index, utt.utterance_id),
            context_samples=start - context.context_start,
            context_text=context.context_text,
        )

    def _maybe_speculate(self) -> list[SessionEvent]:
        utt, span = self.open, self.segmenter.pending_end()
        if utt is None or span is None or self.final_in_flight is not None or self.deferred:
            return []  # (while an earlier final is out, the prompt is not complete yet)
        start, end = span
        if utt.speculation is not None and utt.speculation.end_sample == end:
            return []  # this pause already has its speculative final
        context = self._context(start, end)
        job = self._final_job(utt, start, self.segmenter.audio(start, end), context)
        utt.speculation = _Speculation(job.job_id, start, end, context)
        return [DecodeRequested(job, self.index, utt.utterance_id, DecodePurpose.SPECULATIVE)]

    def on_speculative(self, utterance_id: int, job_id: int, result: DecodeResult | None, error: str | None):
        """The outcome of a speculative final: the final if the utterance ended on that pause; kept for the end
        if it has not come yet; ignored if speech resumed (a newer pause, or the end, replaced it)."""
        utt = self.utterances.get(utterance_id)
        if utt is None or utt.speculation is None or utt.speculation.job_id != job_id:
            return []
        if self.final_in_flight == utterance_id:  # adopted as the final
            return self.on_final(utterance_id, result, error)
        if result is None:
            utt.speculation = None  # the end, if it comes, asks for its own final
        else:
            utt.speculation.result = result
        return []

    def _maybe_partial(self) -> list[SessionEvent]:
        utt = self.open
        if utt is None or not self.config.interim_results:
            return []
        now = self.segmenter.samples_seen
        if now - utt.samples_at_last_partial < self.config.partial_interval_ms * SAMPLE_RATE // 1000:
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
            prompt_language=self.language,
            stream_key=(self.session_id, self.index, utt.utterance_id),
        )
        return [DecodeRequested(job, self.index, utt.utterance_id, DecodePurpose.PARTIAL)]

    def on_partial(self, utterance_id: int, sequence: int, result: DecodeResult, audio_s: float) -> list[SessionEvent]:
        utt = self.utterances.get(utterance_id)
        if utt is None or utt.final_requested or sequence <= utt.partial_shown:
            return []
        utt.partial_shown = sequence
        stable, shown = utt.agreement.update(result.text)
        end = utt.start_sample / SAMPLE_RATE + audio_s
        start = utt.speech_sample / SAMPLE_RATE
        return [
            Partial(self.index, utterance_id, start, end, shown, stable, result.language, result.language_probability)
        ]

    def on_final(self, utterance_id: int, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        """The outcome of the final in flight: its ``Final`` (and ``DecodeError``), then the next final's request."""
        assert utterance_id == self.final_in_flight, (utterance_id, self.final_in_flight)
        utt = self.utterances.pop(utterance_id)
        start, end = utt.speech_sample / SAMPLE_RATE, utt.end_sample / SAMPLE_RATE
        audio_start = utt.start_sample / SAMPLE_RATE  # word times are relative to the decoded audio
        events: list[SessionEvent] = []
        if result is None:
            events.append(DecodeError(self.index, utterance_id, error or "decode failed"))
            text, language, words = "", self.config.language or "", None
            probability = 0.0
        else:
            text, language, probability = result.text, result.language, result.language_probability
            if text and self.language is not None and language != self.language:
                self.prompt.commit("", end, suspicious=True)  # no text of one language prompts another
            if text:  # (an empty final's language is a guess on noise)
                self.language = language
            self.prompt.commit(text, end, suspicious=result.looks_hallucinated(self.final_options), start_s=audio_start)
            words = (
                tuple(
                    Word(w.word, round(audio_start + w.start, 3), round(audio_start + w.end, 3), w.probability)
                    for w in result.words
                )
                if self.config.word_timestamps
                else None
            )
        events.append(Final(self.index, utterance_id, start, end, text, language, words, probability=probability))
        self.final_in_flight = None
        if self.deferred:
            events.extend(self._start_final(*self.deferred.popleft()))
        return events


class StreamingSession:
    """Protocol v1 session logic for ``channels`` independent streams. Not thread-safe: one owner at a time."""

    def __init__(self, session_id: str, config: StreamConfig, classifier: SpeechClassifier | None = None) -> None:
        self.session_id = session_id
        self.config = config.validate()
        self.state = SessionState.OPEN
        self._decoder = PcmDecoder(config.encoding, config.channels)
        self._channels = [_Channel(i, config, session_id, classifier) for i in range(config.channels)]
        self._partial_seq: dict[int, tuple[int, int, int]] = {}  # job_id -> (channel, utterance, sequence)
        self._final_jobs: dict[int, tuple[int, int]] = {}  # job_id -> (channel, utterance)
        self._speculative_jobs: dict[int, tuple[int, int]] = {}  # job_id -> (channel, utterance)
        self._final_audio_s: dict[int, float] = {}  # job_id -> seconds of audio awaiting its final
        self.bytes_received = 0

    @property
    def audio_seconds(self) -> float:
        """Stream seconds received per channel."""
        return self._channels[0].segmenter.samples_seen / SAMPLE_RATE

    @property
    def pending_finals(self) -> int:
        return sum(c.pending_finals for c in self._channels)

    @property
    def backlog_seconds(self) -> float:
        """Audio of ended utterances still waiting for their finals: what backpressure bounds."""
        return sum(self._final_audio_s.values()) + sum(c.deferred_audio_s for c in self._channels)

    @property
    def done(self) -> bool:
        """Closing and every final delivered: the transport may send ``session.closed``."""
        return self.state is not SessionState.OPEN and self.pending_finals == 0

    def receive_audio(self, data: bytes) -> list[SessionEvent]:
        if self.state is not SessionState.OPEN:
            raise ProtocolError("audio after close_stream")
        self.bytes_received += len(data)
        frames = self._decoder.decode(data)
        events: list[SessionEvent] = []
        for channel in self._channels:
            events.extend(channel.feed(frames[:, channel.index]))
        return self._track(events)

    def finalize(self) -> list[SessionEvent]:
        """End the open utterance of every channel now (client ``finalize``); the stream goes on."""
        return self._track([e for c in self._channels for e in c.flush(end_of_stream=False)])

    def close(self) -> list[SessionEvent]:
        """Flush everything (client ``close_stream``); ``done`` turns true once every final is delivered."""
        if self.state is not SessionState.OPEN:
            return []
        events = self._track([e for c in self._channels for e in c.flush(end_of_stream=True)])
        self.state = SessionState.CLOSING
        return events

    def mark_closed(self) -> None:
        self.state = SessionState.CLOSED

    def receive_decode_result(self, job: DecodeJob, result: DecodeResult) -> list[SessionEvent]:
        return self._track(self._on_outcome(job, result, None))

    def receive_decode_failure(self, job: DecodeJob, message: str) -> list[SessionEvent]:
        return self._track(self._on_outcome(job, None, message))

    def _on_outcome(self, job: DecodeJob, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        if job.job_id in self._final_jobs:
            channel, utterance_id = self._final_jobs.pop(job.job_id)
            self._final_audio_s.pop(job.job_id, None)
            return self._channels[channel].on_final(utterance_id, result, error)
        if job.job_id in self._speculative_jobs:
            channel, utterance_id = self._speculative_jobs.pop(job.job_id)
            return self._channels[channel].on_speculative(utterance_id, job.job_id, result, error)
        entry = self._partial_seq.pop(job.job_id, None)
        if entry is None or result is None:
            return []  # a failed partial is harmless: the next one or the final replaces it
        channel, utterance_id, sequence = entry
        return self._channels[channel].on_partial(utterance_id, sequence, result, job.duration_s)

    def abandon(self, job: DecodeJob) -> list[SessionEvent]:
        """The engine dropped ``job`` unrun (a newer partial superseded it)."""
        self._partial_seq.pop(job.job_id, None)
        if job.job_id in self._final_jobs or job.job_id in self._speculative_jobs:
            return self.receive_decode_failure(job, "decode cancelled")
        return []

    def _track(self, events: list[SessionEvent]) -> list[SessionEvent]:
        for event in events:
            if not isinstance(event, DecodeRequested):
                continue
            if event.speculative:
                self._speculative_jobs[event.job.job_id] = (event.channel, event.utterance_id)
            elif event.is_final:
                self._final_jobs[event.job.job_id] = (event.channel, event.utterance_id)
                self._final_audio_s[event.job.job_id] = event.job.own_s
            else:
                utt = self._channels[event.channel].utterances[event.utterance_id]
                self._partial_seq[event.job.job_id] = (
                    event.channel,
                    event.utterance_id,
                    utt.partial_requests,
                )
        return events
