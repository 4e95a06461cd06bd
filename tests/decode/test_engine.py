"""``DecodeEngine`` fault isolation: a batch that raises fails its own jobs only, and the engine goes on.

The model is replaced by a scripted backend (this is a unit test of the asyncio driver); the same fault
wrapper that the server's test-only ``fail_decode_marker`` setting installs is exercised end to end in
``tests/integration/test_limits.py``.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from stream_server.decode.engine import BatchReport, DecodeEngine, Superseded
from stream_server.decode.scheduler import BatchScheduler
from stream_server.decode.types import DecodeJob, DecodeOptions, DecodeResult, JobKind
from stream_server.errors import DecodeFailed, Overloaded
from stream_server.faults import FaultInjectingBackend, InjectedFault

AUDIO = np.zeros(1600, dtype=np.float32)


class ScriptedBackend:
    """Echoes each job's prompt as its text; records batches; can be held to let work queue up."""

    model_id = "scripted"
    is_multilingual = False

    def __init__(self) -> None:
        self.batches: list[list[DecodeJob]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.short_by = 0  # return this many results too few

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        return [jobs]

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        self.gate.wait(10)
        self.batches.append(list(jobs))
        results = [DecodeResult(j.job_id, j.options.initial_prompt or "", (), "en", -0.1, 1.0, 0.0, 0.0) for j in jobs]
        return results[: len(results) - self.short_by]


def job(owner: str, prompt: str = "", kind: JobKind = JobKind.FINAL, utterance: int = 0) -> DecodeJob:
    key = (owner, 0, utterance) if kind is not JobKind.OFFLINE else None
    return DecodeJob(owner=owner, kind=kind, audio=AUDIO, options=DecodeOptions(initial_prompt=prompt), stream_key=key)


async def settle(futures: list[asyncio.Future[DecodeResult]]) -> list[object]:
    done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
    return list(done)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def started_engine(backend: ScriptedBackend, max_batch_size: int, **options: int) -> DecodeEngine:
    engine = DecodeEngine(backend, BatchScheduler(max_batch_size=max_batch_size), **options)
    engine.start()
    return engine


def engine_failing_on_boom(backend: ScriptedBackend, max_batch_size: int) -> tuple[DecodeEngine, list[BatchReport]]:
    """A started engine whose batches fail where a job's prompt holds "BOOM", and the reports it makes."""
    engine = DecodeEngine(FaultInjectingBackend(backend, "BOOM"), BatchScheduler(max_batch_size=max_batch_size))
    reports: list[BatchReport] = []
    engine.observers.append(reports.append)
    engine.start()
    return engine, reports


async def occupy(backend: ScriptedBackend, engine: DecodeEngine, first: DecodeJob) -> asyncio.Future[DecodeResult]:
    """Hold the model on ``first``, so that what is submitted next queues up behind it."""
    backend.gate.clear()
    future = engine.submit(first)
    await asyncio.sleep(0.05)  # the engine has taken ``first`` and waits on the gate
    return future


def test_a_failing_batch_fails_only_its_own_jobs_and_the_engine_goes_on() -> None:
    async def scenario() -> None:
        inner = ScriptedBackend()
        engine, reports = engine_failing_on_boom(inner, 2)
        first = [await occupy(inner, engine, job("a", "ok-1"))]  # then the queue forms batches of two, in order
        doomed = [engine.submit(job("b", "BOOM here")), engine.submit(job("c", "bystander"))]
        later = [engine.submit(job("d", "ok-2")), engine.submit(job("e", "ok-3"))]
        inner.gate.set()
        results = await settle(first + doomed + later)
        assert [r.text for r in results[:1]] == ["ok-1"]  # type: ignore[union-attr]
        for outcome in results[1:3]:  # the whole batch that held the bad job fails, bystander included
            assert isinstance(outcome, DecodeFailed) and "injected fault" in outcome.message
        assert [r.text for r in results[3:]] == ["ok-2", "ok-3"]  # type: ignore[union-attr]
        assert [r.failed for r in reports] == [False, True, False]
        assert engine.alive and engine.scheduler.queue_depth == 0
        assert not engine._futures  # nothing left behind for the failed jobs
        await engine.stop()

    run(scenario())


def test_a_backend_returning_too_few_results_fails_that_batch() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        engine = started_engine(backend, 4)
        backend.short_by = 1
        failed = await settle([engine.submit(job("a", "x")), engine.submit(job("b", "y"))])
        assert all(isinstance(f, DecodeFailed) for f in failed)
        backend.short_by = 0
        ok = await settle([engine.submit(job("a", "z"))])
        assert ok[0].text == "z"  # type: ignore[union-attr]
        await engine.stop()

    run(scenario())


def test_cancel_owner_frees_a_disconnected_sessions_queued_jobs() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        engine = started_engine(backend, 1)
        running = await occupy(backend, engine, job("other", "first"))
        gone = [engine.submit(job("gone", f"u{i}", utterance=i)) for i in range(3)]
        gone.append(engine.submit(job("gone", "p", kind=JobKind.PARTIAL, utterance=9)))
        stays = engine.submit(job("other", "second", utterance=1))
        assert engine.cancel_owner("gone") == 4
        assert all(f.cancelled() for f in gone)
        backend.gate.set()
        assert [r.text for r in await settle([running, stays])] == ["first", "second"]  # type: ignore[union-attr]
        decoded_owners = {j.owner for batch in backend.batches for j in batch}
        assert decoded_owners == {"other"}
        assert not engine._futures and engine.scheduler.queue_depth == 0
        await engine.stop()

    run(scenario())


def test_a_newer_partial_supersedes_the_queued_one() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        engine = started_engine(backend, 4)
        blocker = await occupy(backend, engine, job("x", "block"))
        old = engine.submit(job("a", "old", kind=JobKind.PARTIAL))
        new = engine.submit(job("a", "new", kind=JobKind.PARTIAL))
        backend.gate.set()
        outcomes = await settle([blocker, old, new])
        assert isinstance(outcomes[1], Superseded) and outcomes[2].text == "new"  # type: ignore[union-attr]
        await engine.stop()

    run(scenario())


def test_a_full_queue_refuses_new_work_as_overloaded() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        engine = started_engine(backend, 1, max_queue=2)
        running = await occupy(backend, engine, job("a", "run"))
        queued = [engine.submit(job("a", "q1", utterance=1)), engine.submit(job("a", "q2", utterance=2))]
        with pytest.raises(Overloaded):
            engine.submit(job("a", "q3", utterance=3))
        backend.gate.set()
        assert len(await settle([running, *queued])) == 3
        await engine.stop()

    run(scenario())


def test_fault_wrapper_passes_clean_batches_through() -> None:
    backend = FaultInjectingBackend(ScriptedBackend(), "BOOM")
    assert [r.text for r in backend.decode_batch([job("a", "fine")])] == ["fine"]
    with pytest.raises(InjectedFault):
        backend.decode_batch([job("a", "fine"), job("b", "xBOOMx")])
    with pytest.raises(ValueError):
        FaultInjectingBackend(ScriptedBackend(), "")


class PerJobBackend(ScriptedBackend):
    """Runs every job as its own model call (as jobs of different encoder windows run); the call for a job
    whose prompt is "slow" waits on ``slow_gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_gate = threading.Event()

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        return [[j] for j in jobs]

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        if jobs[0].options.initial_prompt == "slow":
            self.slow_gate.wait(10)
        return super().decode_batch(jobs)


def test_each_model_call_of_a_batch_delivers_its_results_at_once() -> None:
    async def scenario() -> None:
        backend = PerJobBackend()
        engine, reports = engine_failing_on_boom(backend, 4)
        blocker = await occupy(backend, engine, job("x", "block"))
        fast, bad, slow = (
            engine.submit(job("a", "fast")),
            engine.submit(job("b", "BOOM")),
            engine.submit(job("c", "slow")),
        )
        backend.gate.set()
        assert (await asyncio.wait_for(fast, 5)).text == "fast"  # while "slow", same batch, is still running
        with pytest.raises(DecodeFailed):  # a failing call fails its own job, not its batch-mates
            await asyncio.wait_for(bad, 5)
        assert not slow.done()
        backend.slow_gate.set()
        assert (await asyncio.wait_for(slow, 5)).text == "slow"
        assert (await blocker).text == "block"
        assert [len(r.jobs) for r in reports] == [1, 3] and reports[1].failed  # one scheduler batch, reported once
        await engine.stop()

    run(scenario())


class OneCallPerJob(ScriptedBackend):
    """Splits every batch into one model call per job, as the real backend does for differing windows."""

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        return [[j] for j in jobs]


def test_a_final_queued_during_a_partial_batch_runs_before_its_remaining_calls() -> None:
    async def main() -> tuple[list[list[str]], list[object], list[int]]:
        backend = OneCallPerJob()
        engine = started_engine(backend, max_batch_size=8)
        reports: list[BatchReport] = []
        engine.observers.append(reports.append)
        backend.gate.clear()
        partials = [engine.submit(job(f"s{i}", f"p{i}", JobKind.PARTIAL)) for i in range(3)]
        await asyncio.sleep(0.05)  # the engine took the three as one batch; its first call waits on the gate
        final = engine.submit(job("f", "final"))
        backend.gate.set()
        results = await settle([*partials, final])
        await engine.stop()
        texts = [[j.options.initial_prompt or "" for j in b] for b in backend.batches]
        return texts, results, [len(r.jobs) for r in reports]

    texts, results, report_sizes = run(main())
    assert texts == [["p0"], ["final"], ["p1"], ["p2"]]
    assert [r.text for r in results] == ["p0", "p1", "p2", "final"]  # type: ignore[attr-defined]
    assert report_sizes == [1, 1, 2]  # a batch reports the jobs it ran, not those it handed back


def test_a_partial_replaced_while_handed_back_is_superseded_not_run() -> None:
    async def main() -> tuple[list[list[str]], list[object]]:
        backend = OneCallPerJob()
        engine = started_engine(backend, max_batch_size=8)
        backend.gate.clear()
        first = engine.submit(job("a", "a-old", JobKind.PARTIAL))
        old = engine.submit(job("b", "b-old", JobKind.PARTIAL))
        await asyncio.sleep(0.05)
        newer = engine.submit(job("b", "b-new", JobKind.PARTIAL))
        final = engine.submit(job("f", "final"))
        backend.gate.set()
        results = await settle([first, old, newer, final])
        await engine.stop()
        return [[j.options.initial_prompt or "" for j in b] for b in backend.batches], results

    texts, results = run(main())
    assert texts == [["a-old"], ["final"], ["b-new"]]
    assert isinstance(results[1], Superseded)
    assert [getattr(r, "text", None) for r in (results[0], results[2], results[3])] == ["a-old", "b-new", "final"]


def with_extras(owner: str, utterance: int = 0) -> DecodeJob:
    """A final as a session with context and an idle beam asks for it: 0.1 s of context, beam 5, greedy when busy."""
    return DecodeJob(
        owner=owner,
        kind=JobKind.FINAL,
        audio=np.zeros(3200, dtype=np.float32),
        options=DecodeOptions(beam_size=5),
        late_options=DecodeOptions(beam_size=1),
        prompt_text="Earlier.",
        stream_key=(owner, 0, utterance),
        context_samples=1600,
        context_text="Before.",
    )


def test_a_lone_final_keeps_its_extras_finals_queued_together_lose_their_context_and_late_ones_the_beam():
    async def scenario():
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=8)
        alone = with_extras("a")
        await settle([engine.submit(alone)])
        (first,) = backend.batches[-1]
        assert first is not alone and first.job_id == alone.job_id  # the job itself, as submitted (enqueue time set)
        assert first.context_samples == 1600 and first.options.beam_size == 5

        blocker = await occupy(backend, engine, job("x", kind=JobKind.PARTIAL))
        together = [with_extras("b"), with_extras("c")]
        futures = [engine.submit(j) for j in together]
        backend.gate.set()
        await settle([blocker, *futures])
        batch = backend.batches[-1]
        assert [j.job_id for j in batch] == [j.job_id for j in together]
        for ran in batch:  # own audio, the context's text back in the prompt; the beam stays (same window)
            assert ran.context_samples == 0 and len(ran.audio) == 1600
            assert ran.prompt_text == "Earlier. Before." and ran.options.beam_size == 5

        blocker = await occupy(backend, engine, job("y", kind=JobKind.PARTIAL))
        late = engine.submit(with_extras("d"))
        await asyncio.sleep(0.35)  # longer than EXTRAS_MAX_WAIT_S: decoded plainly and greedily
        backend.gate.set()
        await settle([blocker, late])
        (plain,) = backend.batches[-1]
        assert plain.context_samples == 0 and plain.options.beam_size == 1
        assert plain.prompt_text == "Earlier. Before."
        await engine.stop()

    run(scenario())


def test_extras_are_dropped_while_finals_with_them_would_keep_the_model_busy():
    async def scenario():
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=8, extras_max_load=0.5)
        await settle([engine.submit(with_extras("a", 0))])
        assert backend.batches[-1][0].context_samples  # alone and idle: kept
        engine._extras_call_s = 0.2  # as if each call of finals with extras took 0.2 s
        for utterance in range(1, 4):  # 4 finals in the rate window: 0.4 finals/s * 0.2 s = 0.08
            await settle([engine.submit(with_extras("a", utterance))])
        assert backend.batches[-1][0].context_samples
        engine._extras_call_s = 2.0  # ... 0.4/s * 2 s = 0.8 of the model's time: too much for the context
        await settle([engine.submit(with_extras("a", 9))])
        assert backend.batches[-1][0].context_samples == 0 and backend.batches[-1][0].options.beam_size == 5
        await engine.stop()

    run(scenario())


def test_extras_are_dropped_while_more_speakers_wait_for_a_partial_than_half_a_batch_holds():
    async def scenario():
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=4)  # half a batch: 2
        for waiting, kept in ((2, True), (3, False)):
            blocker = await occupy(backend, engine, job("x", kind=JobKind.PARTIAL, utterance=99))
            partials = [engine.submit(job(f"p{i}", kind=JobKind.PARTIAL)) for i in range(waiting)]
            final = engine.submit(with_extras(f"f{waiting}"))
            backend.gate.set()
            await settle([blocker, final, *partials])
            (ran,) = next(b for b in backend.batches if b[0].owner == f"f{waiting}")
            assert bool(ran.context_samples) is kept and ran.options.beam_size == 5
        await engine.stop()

    run(scenario())
