"""Discrete-event simulation of one decoder process serving ``n`` live streams.

Drives the server's own ``BatchScheduler`` (rules 1-6 of ``stream_server/decode/scheduler.py``) with
``DecodeJob``s whose audio is a zero-stride array of the right length, and replays around it what the engine
and the session do: one model call at a time (a batch split by encoder window as the backend splits it), finals
pre-empting partials between calls, the engine's economy rule for finals' extras (context, idle beam), partials
every ``partial_interval_s`` of new audio while voiced, speculative finals ``heard_tail_s`` into a pause, endpointing
(and the soft endpoint past ``soft_max_utterance_s``), and one final in flight per stream. Time is seconds.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from stream_server.config import Settings
from stream_server.decode.final_policy import FinalPolicy, FinalPolicyConfig, QueueView, apply, offers_choice
from stream_server.decode.scheduler import BatchScheduler, SchedulerConfig
from stream_server.decode.types import FALLBACK_TEMPERATURES, SAMPLE_RATE, DecodeJob, DecodeOptions, JobKind
from stream_server.session.segmenter import HEARD_TAIL_MS, TAIL_MS

from .service import ServiceModel
from .workload import Workload

MIN_PARTIAL_AUDIO_S = 1.0  # session/machine.py
EXTRAS_MAX_WAIT_S = Settings().late_final_after_ms / 1000.0  # decode/final_policy.py's rule
CONTEXT_WINDOW_S = 28.0  # session/machine.py
PARTIAL = DecodeOptions(language="en")
GREEDY_FINAL = DecodeOptions(language="en", temperatures=FALLBACK_TEMPERATURES)
BEAM5_FINAL = DecodeOptions(language="en", beam_size=5, temperatures=FALLBACK_TEMPERATURES)
_ZERO = np.zeros(1, dtype=np.float32)


@dataclass(frozen=True)
class Policy:
    """The server's streaming and scheduling settings (defaults: ``stream_server.config.Settings``)."""

    endpointing_s: float = 0.5
    tail_s: float = TAIL_MS / 1000  # the server's: the silence a pause-ended final's audio keeps
    heard_tail_s: float = HEARD_TAIL_MS / 1000  # the server's: speculative finals start this far into a pause
    soft_endpointing_s: float = 0.2
    soft_max_utterance_s: float = 8.0
    partial_interval_s: float = 0.5
    max_batch_size: int = 16
    max_batch_audio_s: float = 12.0  # 0 on CUDA
    final_context_s: float = 10.0  # 0: finals never carry context
    idle_final_beam: bool = True  # finals the server is not behind on use beam 5
    extras_max_load: float = 0.5
    speculative: bool = True
    partials: bool = True  # interim results asked for


@dataclass(frozen=True)
class Result:
    streams: int
    finals: int
    final_latency_p50_s: float
    final_latency_p95_s: float
    partial_interval_p50_s: float  # achieved time between partial results of an utterance
    partials_delivered_per_voiced_s: float
    partials_delivered: int
    utilisation: float  # share of simulated time the model was busy
    unfinished_finals: int  # still owed when the simulation ended (counted at their age then)


def audio(seconds: float) -> np.ndarray:
    """A zero-stride stand-in for ``seconds`` of audio: only its length matters to the scheduler and backend."""
    return np.broadcast_to(_ZERO, (max(1, int(round(seconds * SAMPLE_RATE))),))


@dataclass
class _Utterance:
    stream: int
    uid: int
    start: float
    last_voiced: float = 0.0
    end_at: float = 0.0  # endpoint time (when the segmenter ends it)
    final_s: float = 0.0  # seconds of audio its final decodes
    spec_job: int = 0  # job id of the latest speculative final
    spec_voiced: float = -1.0  # the end of speech it was asked for
    spec_done: float = -1.0  # when it came back (-1: not yet)
    final_job: int = 0
    partials: list[float] = field(default_factory=list)  # when each partial result came back
    delivered: bool = False
    cut: bool = False  # ended by the end of its stream, not by a pause


@dataclass
class _Stream:
    index: int
    runs: list[tuple[float, float]]
    final_busy: bool = False  # a final of this stream is out (finals are asked for one at a time)
    deferred: deque[_Utterance] = field(default_factory=deque)
    final_starts: list[float] = field(default_factory=list)  # starts of utterances whose final is in


class Simulation:
    def __init__(self, service: ServiceModel, policy: Policy = Policy()) -> None:
        self.service = service
        self.policy = policy
        self.window = Settings().window_policy()  # the server's encoder windows

    def run(
        self,
        workload: Workload,
        streams: int,
        duration_s: float = 60.0,
        warmup_s: float = 10.0,
        seed: int = 1,
        count_cut: bool = False,
    ) -> Result:
        """Simulate ``streams`` streams for ``duration_s`` seconds each (starts staggered over the first turn);
        statistics cover finals whose speech ended after ``warmup_s``, and the finals of utterances that the
        end of a stream cut only with ``count_cut`` (all streams end together: a burst no steady state has)."""
        rng = random.Random(seed)
        run = _Run(self, warmup_s, count_cut)
        for i in range(streams):
            lead = rng.uniform(0.0, workload.turn_pause_s[1] + 1.0) if streams > 1 else 0.1
            run.add_stream(_Stream(i, workload.voiced_runs(rng, lead + duration_s, lead)))
        return run.finish(streams)


class _Run:
    def __init__(self, sim: Simulation, warmup_s: float, count_cut: bool) -> None:
        self.sim, self.p, self.warmup, self.count_cut = sim, sim.policy, warmup_s, count_cut
        self.sched = BatchScheduler(
            SchedulerConfig(self.p.max_batch_size, self.p.max_batch_audio_s, 0.0, 1 << 30, sim.window)
        )
        self.events: list[tuple[float, int, str, object]] = []
        self.seq = 0
        self.now = 0.0
        self.busy_s = 0.0
        self.idle = True
        self.calls: list[list[DecodeJob]] = []
        self.jobs: dict[int, tuple[_Utterance, str]] = {}
        self.latencies: list[float] = []
        self.open_finals: dict[int, _Utterance] = {}  # final job id -> utterance, until delivered
        # the server's own final policy (tiers, load estimate), as the scheduler above is the server's own
        self.final_policy = FinalPolicy(FinalPolicyConfig(self.p.extras_max_load, EXTRAS_MAX_WAIT_S))
        self.voiced_s = 0.0
        self.utterances: list[_Utterance] = []
        self.streams: dict[int, _Stream] = {}

    def at(self, t: float, kind: str, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    # --- the session side: requests from each stream's timeline

    def add_stream(self, s: _Stream) -> None:
        """Turn the voiced runs into utterances (the segmenter's rules) and schedule their requests."""
        p, uid, last_partial = self.p, 0, -1e9
        utt: _Utterance | None = None
        self.streams[s.index] = s
        for k, (a, b) in enumerate(s.runs):
            self.voiced_s += b - a
            if utt is None:
                uid += 1
                utt = _Utterance(s.index, uid, a)
                self.utterances.append(utt)
                last_partial = -1e9
            first = max(a, utt.start + MIN_PARTIAL_AUDIO_S, last_partial + p.partial_interval_s)
            t = first
            while p.partials and t < b:
                self.at(t, "partial", (utt, t - utt.start))
                last_partial = t
                t += p.partial_interval_s
            pause = s.runs[k + 1][0] - b if k + 1 < len(s.runs) else 1e9
            limit = p.soft_endpointing_s if b - utt.start > p.soft_max_utterance_s else p.endpointing_s
            if p.speculative and pause >= p.heard_tail_s and limit > p.heard_tail_s:
                self.at(b + p.heard_tail_s, "speculate", (s, utt, b))
            if pause >= limit:
                utt.last_voiced, utt.end_at = b, b + limit
                utt.final_s = b - utt.start + min(p.tail_s, limit)
                utt.cut = k + 1 == len(s.runs)
                self.at(utt.end_at, "end", (s, utt))
                utt = None

    def _job(self, utt: _Utterance, kind: JobKind, seconds: float, context_s: float = 0.0) -> DecodeJob:
        if kind is JobKind.PARTIAL:
            opts, late = PARTIAL, None
        else:
            opts = BEAM5_FINAL if self.p.idle_final_beam else GREEDY_FINAL
            late = GREEDY_FINAL if opts is not GREEDY_FINAL else None
        ctx = int(context_s * SAMPLE_RATE)
        job = DecodeJob(
            owner=f"s{utt.stream}",
            kind=kind,
            audio=audio(seconds + context_s),
            options=opts,
            stream_key=(f"s{utt.stream}", 0, utt.uid),
            enqueued_at=self.now,
            context_samples=ctx,
            late_options=late,
        )
        return job

    def _context_s(self, utt: _Utterance, seconds: float) -> float:
        """From the start of the earliest delivered final that began within ``final_context_s`` before this
        utterance, the whole window under 28 s (``session/machine.py``)."""
        earliest = max(utt.start - self.p.final_context_s, utt.start + seconds - CONTEXT_WINDOW_S)
        starts = [t for t in self.streams[utt.stream].final_starts if earliest <= t < utt.start]
        return utt.start - min(starts) if starts and self.p.final_context_s > 0 else 0.0

    def submit(self, utt: _Utterance, job: DecodeJob, purpose: str) -> None:
        self.jobs[job.job_id] = (utt, purpose)
        if job.kind is JobKind.FINAL:
            self.final_policy.load.final_arrived(self.now)
        for gone in self.sched.add(job):
            self.jobs.pop(gone.job_id, None)
        self.kick()

    def on_partial(self, utt: _Utterance, seconds: float) -> None:
        self.submit(utt, self._job(utt, JobKind.PARTIAL, seconds), "partial")

    def on_speculate(self, s: _Stream, utt: _Utterance, voiced_end: float) -> None:
        if s.final_busy or s.deferred:
            return  # while an earlier final is out, the prompt is not complete yet
        seconds = voiced_end - utt.start + self.p.tail_s
        job = self._job(utt, JobKind.FINAL, seconds, self._context_s(utt, seconds))
        utt.spec_job, utt.spec_voiced, utt.spec_done = job.job_id, voiced_end, -1.0
        self.submit(utt, job, "speculative")

    def on_end(self, s: _Stream, utt: _Utterance) -> None:
        if s.final_busy or s.deferred:
            s.deferred.append(utt)
            return
        self._start_final(s, utt)

    def _start_final(self, s: _Stream, utt: _Utterance) -> None:
        s.final_busy = True
        seconds = utt.final_s
        same_pause = utt.spec_job and utt.spec_voiced == utt.last_voiced
        if same_pause and (utt.spec_job in self.jobs or utt.spec_done >= 0):
            utt.final_job = utt.spec_job
            self.open_finals[utt.final_job] = utt
            if utt.spec_done >= 0:
                self.deliver_final(utt, self.now)
            return
        job = self._job(utt, JobKind.FINAL, seconds, self._context_s(utt, seconds))
        utt.final_job = job.job_id
        self.open_finals[job.job_id] = utt
        self.submit(utt, job, "final")

    def deliver_final(self, utt: _Utterance, t: float) -> None:
        self.open_finals.pop(utt.final_job, None)
        utt.delivered = True
        if utt.last_voiced >= self.warmup and (self.count_cut or not utt.cut):
            self.latencies.append(t - utt.last_voiced)
        s = self.streams[utt.stream]
        s.final_starts.append(utt.start)
        s.final_busy = False
        if s.deferred:
            self._start_final(s, s.deferred.popleft())

    # --- the engine side: one model call at a time

    def kick(self) -> None:
        if not self.idle:
            return
        batch = self.sched.next_batch()
        if not batch:
            return
        batch = self.economize(batch)
        groups: dict[tuple[int, int], list[DecodeJob]] = {}
        for job in batch:  # the backend's split: same search and window share a call
            key = (job.options.beam_size, self.sim.window.frames_for(len(job.audio)))
            groups.setdefault(key, []).append(job)
        self.calls = list(groups.values())
        self.idle = False
        self.start_call()

    def economize(self, batch: list[DecodeJob]) -> list[DecodeJob]:
        queue = QueueView(len(batch), self.sched.finals_waiting, self.sched.partials_waiting, self.sched.max_batch_size)
        return [apply(job, self.final_policy.choose(job, self.now, queue)) for job in batch]

    def start_call(self) -> None:
        call = self.calls.pop(0)
        search = "partial" if call[0].kind is JobKind.PARTIAL else "final"
        if search == "final" and call[0].options.beam_size > 1:
            search = "final_beam5"
        window_s = self.sim.window.frames_for(max(len(j.audio) for j in call)) / 100.0
        took = self.sim.service.call_s(search, len(call), window_s)
        if any(offers_choice(j) for j in call):
            self.final_policy.load.call_took(took)
        self.busy_s += took
        self.at(self.now + took, "done", call)

    def on_done(self, call: list[DecodeJob]) -> None:
        for job in call:
            entry = self.jobs.pop(job.job_id, None)
            if entry is None:
                continue
            utt, purpose = entry
            if purpose == "partial":
                utt.partials.append(self.now)
            elif purpose == "speculative" and utt.spec_job == job.job_id:
                utt.spec_done = self.now
            if utt.final_job == job.job_id:
                self.deliver_final(utt, self.now)
        if self.calls and self.sched.finals_waiting and not any(j.kind is JobKind.FINAL for j in self.calls[0]):
            rest = [j for c in self.calls for j in c if j.job_id in self.jobs]
            self.calls = []
            for gone in self.sched.put_back(rest):
                self.jobs.pop(gone.job_id, None)
        if self.calls:
            self.start_call()
        else:
            self.idle = True
            self.kick()

    def finish(self, streams: int) -> Result:
        end = max((e[0] for e in self.events), default=0.0)
        while self.events:
            self.now, _, kind, payload = heapq.heappop(self.events)
            if kind == "partial":
                self.on_partial(*payload)  # type: ignore[misc]
            elif kind == "speculate":
                self.on_speculate(*payload)  # type: ignore[misc]
            elif kind == "end":
                self.on_end(*payload)  # type: ignore[misc]
            elif kind == "done":
                self.on_done(payload)  # type: ignore[arg-type]
            if self.now > end + 30.0:
                break
        owed = [
            u
            for u in self.utterances
            if u.end_at
            and u.end_at <= self.now
            and u.last_voiced >= self.warmup
            and not u.delivered
            and (self.count_cut or not u.cut)
        ]
        lat = np.array(self.latencies + [self.now - u.last_voiced for u in owed])
        gaps = [b - a for u in self.utterances for a, b in zip(u.partials, u.partials[1:])]
        n_partials = sum(len(u.partials) for u in self.utterances)
        span = max(self.now, 1e-9)
        return Result(
            streams=streams,
            finals=len(lat),
            final_latency_p50_s=float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            final_latency_p95_s=float(np.percentile(lat, 95)) if len(lat) else float("nan"),
            partial_interval_p50_s=float(np.median(gaps)) if gaps else float("nan"),
            partials_delivered_per_voiced_s=n_partials / max(self.voiced_s, 1e-9),
            partials_delivered=n_partials,
            utilisation=min(1.0, self.busy_s / span),
            unfinished_finals=len(owed),
        )
