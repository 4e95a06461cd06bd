"""A channel's finals: one final decode at a time, in utterance order, and speculative finals.

Each final is decoded with the text of every earlier one in its prompt, so finals go out one at a time and a
transcript never depends on how busy the server was. Speculative finals: once ``heard_tail_ms`` of a pause
has passed, the audio the final would get if the pause ends the utterance is complete, so its decode is asked for
then (same audio, prompt and options as the real one). If the pause does end the utterance, that decode *is*
the final (sent at once if it is back); if speech resumes, it is ignored. See docs/decisions.md#speculative-finals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from ..decode.types import SAMPLE_RATE, DecodeJob, DecodeOptions, DecodeResult, JobKind
from .context import ContextSelector, FinalContext
from .events import DecodePurpose, DecodeRequested, SessionEvent
from .utterance import Speculation, Utterance, UtteranceState

# Turns a final's outcome into events (``Final``, maybe ``DecodeError``): ``(utterance, result, error)``.
Deliver = Callable[[Utterance, DecodeResult | None, str | None], list[SessionEvent]]


class FinalQueue:
    def __init__(
        self,
        channel: int,
        session_id: str,
        selector: ContextSelector,
        options: DecodeOptions,
        late_options: DecodeOptions | None,
        deliver: Deliver,
    ) -> None:
        self.channel = channel
        self.session_id = session_id
        self.selector = selector
        self.options = options  # a final that did not wait: full effort
        self.late_options = late_options  # a final that waited (None: ``options``)
        self._deliver = deliver
        self.prompt_language: str | None = None  # of the rolling prompt's text (the channel sets it)
        self.in_flight: Utterance | None = None
        self._in_flight_job: int | None = None
        self._in_flight_audio_s = 0.0
        self.deferred: deque[Utterance] = deque()

    @property
    def busy(self) -> bool:
        """A final is out or waiting: the prompt for the next one is not complete yet."""
        return self.in_flight is not None or bool(self.deferred)

    @property
    def backlog_s(self) -> float:
        """Audio of ended utterances whose finals are not back yet (a speculative final adopted: 0)."""
        deferred = sum(len(u.ended.audio) for u in self.deferred if u.ended is not None)
        return self._in_flight_audio_s + deferred / SAMPLE_RATE

    def end(self, utt: Utterance) -> list[SessionEvent]:
        """``utt`` has ended (``utt.ended`` holds its audio): ask for its final now or after those before it."""
        if self.busy:
            self.deferred.append(utt)
            return []
        return self._start(utt)

    def speculate(
        self, utt: Utterance, start: int, end: int, audio: Callable[[int, int], np.ndarray]
    ) -> list[SessionEvent]:
        """A pause under way would hand over samples ``[start, end)`` (``audio(start, end)``): decode its final
        ahead, unless this pause has one already or an earlier final is still out (its text is not in yet)."""
        if self.busy or (utt.speculation is not None and utt.speculation.end_sample == end):
            return []
        context = self.selector.select(start, end)
        job = self._job(utt, start, audio(start, end), context)
        utt.speculation = Speculation(job.job_id, start, end, context)
        return [DecodeRequested(job, self.channel, utt.utterance_id, DecodePurpose.SPECULATIVE)]

    def on_final(self, request: DecodeRequested, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        if self.in_flight is None or request.job.job_id != self._in_flight_job:
            return []  # answered already
        return self._finish(result, error)

    def on_speculative(
        self, utt: Utterance | None, request: DecodeRequested, result: DecodeResult | None, error: str | None
    ) -> list[SessionEvent]:
        """The final if the utterance ended on that pause; kept for the end if it has not come yet; ignored if
        speech resumed (a newer pause, or the end, replaced it)."""
        if self.in_flight is not None and request.job.job_id == self._in_flight_job:
            return self._finish(result, error)
        if utt is None or utt.speculation is None or utt.speculation.job_id != request.job.job_id:
            return []
        if result is None:
            utt.speculation = None  # the end, if it comes, asks for its own final
        else:
            utt.speculation.result = result
        return []

    def _start(self, utt: Utterance) -> list[SessionEvent]:
        ended = utt.ended
        if ended is None:
            raise RuntimeError(f"utterance {utt.utterance_id} has no audio to finalize")
        utt.move(UtteranceState.FINALIZING)
        utt.ended = None
        self.in_flight = utt
        context = self.selector.select(ended.start_sample, ended.end_sample)
        spec = utt.speculation
        if spec is not None and (spec.start_sample, spec.end_sample, spec.context) == (
            ended.start_sample,
            ended.end_sample,
            context,
        ):
            # the speculative decode is this final: delivered now if back, else when it is
            self._in_flight_job, self._in_flight_audio_s = spec.job_id, 0.0
            return self._finish(spec.result, None) if spec.result is not None else []
        utt.speculation = None
        job = self._job(utt, ended.start_sample, ended.audio, context)
        self._in_flight_job, self._in_flight_audio_s = job.job_id, job.own_s
        return [DecodeRequested(job, self.channel, utt.utterance_id, DecodePurpose.FINAL)]

    def _finish(self, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        utt = self.in_flight
        if utt is None:
            raise RuntimeError("no final is in flight")
        utt.move(UtteranceState.DONE)
        self.in_flight, self._in_flight_job, self._in_flight_audio_s = None, None, 0.0
        events = self._deliver(utt, result, error)
        if self.deferred:
            events.extend(self._start(self.deferred.popleft()))
        return events

    def _job(self, utt: Utterance, start: int, audio: np.ndarray, context: FinalContext) -> DecodeJob:
        return DecodeJob(
            owner=self.session_id,
            kind=JobKind.FINAL,
            audio=self.selector.audio(context, start, audio),
            options=self.options,
            late_options=self.late_options,
            prompt_text=context.prompt,
            prompt_language=self.prompt_language,
            stream_key=(self.session_id, self.channel, utt.utterance_id),
            context_samples=start - context.context_start,
            context_text=context.context_text,
        )
