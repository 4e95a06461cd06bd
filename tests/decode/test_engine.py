"""``DecodeEngine``, the asyncio driver: fault isolation, supersession, pre-emption between model calls, the
final policy's tiers and the repair steps it runs as model calls of their own.

The model is ``FakeBackend`` (this is a unit test of the driver; tests/integration covers the real model); the
same fault wrapper that the server's test-only ``fail_decode_marker`` setting installs is exercised end to end in
``tests/integration/test_limits.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from stream_server.config import Settings
from stream_server.decode.backend import AlignedWord, AlignRequest, DecodeBackend
from stream_server.decode.engine import BatchReport, DecodeEngine, Superseded
from stream_server.decode.fake import FakeBackend
from stream_server.decode.final_policy import FinalPolicy, FinalTier
from stream_server.decode.scheduler import BatchScheduler
from stream_server.decode.types import DecodeJob, DecodeOptions, DecodeResult, JobKind
from stream_server.errors import DecodeFailed, Overloaded
from stream_server.faults import FaultInjectingBackend, InjectedFault

AUDIO = np.zeros(1600, dtype=np.float32)


class ScriptedBackend(FakeBackend):
    """Echoes each job's prompt as its text (``FakeBackend``'s rule); can return too few results."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.short_by = 0  # return this many results too few

    @property
    def batches(self) -> list[list[DecodeJob]]:
        return self.calls

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        results = super().decode_batch(jobs)
        return results[: len(results) - self.short_by]


def job(owner: str, prompt: str = "", kind: JobKind = JobKind.FINAL, utterance: int = 0) -> DecodeJob:
    key = (owner, 0, utterance) if kind is not JobKind.OFFLINE else None
    return DecodeJob(owner=owner, kind=kind, audio=AUDIO, options=DecodeOptions(initial_prompt=prompt), stream_key=key)


async def settle(futures: list[asyncio.Future[DecodeResult]]) -> list[object]:
    done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
    return list(done)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def make_engine(backend: DecodeBackend, max_batch_size: int, max_queue: int = 2048, **settings: float) -> DecodeEngine:
    """An engine as the server builds it (``Settings``' scheduler and final policy), with these limits."""
    server = Settings(**settings)  # type: ignore[arg-type]
    config = replace(server.scheduler_config("cpu"), max_batch_size=max_batch_size, max_queue=max_queue)
    return DecodeEngine(backend, BatchScheduler(config), FinalPolicy(server.final_policy()))


def started_engine(backend: DecodeBackend, max_batch_size: int, **options: float) -> DecodeEngine:
    engine = make_engine(backend, max_batch_size, **options)  # type: ignore[arg-type]
    engine.start()
    return engine


def engine_failing_on_boom(backend: FakeBackend, max_batch_size: int) -> tuple[DecodeEngine, list[BatchReport]]:
    """A started engine whose batches fail where a job's prompt holds "BOOM", and the reports it makes."""
    engine = make_engine(FaultInjectingBackend(backend, "BOOM"), max_batch_size)
    reports: list[BatchReport] = []
    engine.observers.append(reports.append)
    engine.start()
    return engine, reports


async def entered(backend: FakeBackend, calls: int) -> None:
    """Wait until ``calls`` model calls have started (held ones included)."""
    await asyncio.to_thread(backend.wait_entered, calls)


async def occupy(backend: FakeBackend, engine: DecodeEngine, first: DecodeJob) -> asyncio.Future[DecodeResult]:
    """Hold the model on ``first``, so that what is submitted next queues up behind it."""
    backend.hold()
    calls = backend.entered
    future = engine.submit(first)
    await entered(backend, calls + 1)  # the engine has taken ``first`` and waits on the gate
    return future


def test_a_failing_batch_fails_only_its_own_jobs_and_the_engine_goes_on() -> None:
    async def scenario() -> None:
        inner = ScriptedBackend()
        engine, reports = engine_failing_on_boom(inner, 2)
        first = [await occupy(inner, engine, job("a", "ok-1"))]  # then the queue forms batches of two, in order
        doomed = [engine.submit(job("b", "BOOM here")), engine.submit(job("c", "bystander"))]
        later = [engine.submit(job("d", "ok-2")), engine.submit(job("e", "ok-3"))]
        inner.release()
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
        backend.release()
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
        backend.release()
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
        backend.release()
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
        super().__init__(one_call_per_job=True)
        self.slow_gate = threading.Event()

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
        backend.release()
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


def one_call_per_job() -> ScriptedBackend:
    """Splits every batch into one model call per job, as the real backend does for differing windows."""
    return ScriptedBackend(one_call_per_job=True)


def test_a_final_queued_during_a_partial_batch_runs_before_its_remaining_calls() -> None:
    async def main() -> tuple[list[list[str]], list[object], list[int]]:
        backend = one_call_per_job()
        engine = started_engine(backend, max_batch_size=8)
        reports: list[BatchReport] = []
        engine.observers.append(reports.append)
        backend.hold()
        partials = [engine.submit(job(f"s{i}", f"p{i}", JobKind.PARTIAL)) for i in range(3)]
        await entered(backend, 1)  # the engine took the three as one batch; its first call waits on the gate
        final = engine.submit(job("f", "final"))
        backend.release()
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
        backend = one_call_per_job()
        engine = started_engine(backend, max_batch_size=8)
        backend.hold()
        first = engine.submit(job("a", "a-old", JobKind.PARTIAL))
        old = engine.submit(job("b", "b-old", JobKind.PARTIAL))
        await entered(backend, 1)
        newer = engine.submit(job("b", "b-new", JobKind.PARTIAL))
        final = engine.submit(job("f", "final"))
        backend.release()
        results = await settle([first, old, newer, final])
        await engine.stop()
        return [[j.options.initial_prompt or "" for j in b] for b in backend.batches], results

    texts, results = run(main())
    assert texts == [["a-old"], ["final"], ["b-new"]]
    assert isinstance(results[1], Superseded)
    assert [getattr(r, "text", None) for r in (results[0], results[2], results[3])] == ["a-old", "b-new", "final"]


def with_extras(owner: str, utterance: int = 0) -> DecodeJob:
    """A final as a session builds it: 0.1 s of context, the final beam 5, the late beam 1."""
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


def test_a_lone_final_is_full_finals_queued_together_lose_their_context_and_late_ones_the_beam():
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
        backend.release()
        await settle([blocker, *futures])
        batch = backend.batches[-1]
        assert [j.job_id for j in batch] == [j.job_id for j in together]
        for ran in batch:  # own audio, the context's text back in the prompt; the beam stays (same window)
            assert ran.context_samples == 0 and len(ran.audio) == 1600
            assert ran.prompt_text == "Earlier. Before." and ran.options.beam_size == 5

        blocker = await occupy(backend, engine, job("y", kind=JobKind.PARTIAL))
        waited = Settings().late_final_after_ms / 1000 + 0.05  # queued longer ago than that: decoded as LATE
        late = engine.submit(replace(with_extras("d"), enqueued_at=time.monotonic() - waited))
        backend.release()
        await settle([blocker, late])
        (plain,) = backend.batches[-1]
        assert plain.context_samples == 0 and plain.options.beam_size == 1
        assert plain.prompt_text == "Earlier. Before."
        await engine.stop()

    run(scenario())


def test_context_is_dropped_while_finals_with_it_would_keep_the_model_busy():
    async def scenario():
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=8, final_context_max_load=0.5)
        await settle([engine.submit(with_extras("a", 0))])
        assert backend.batches[-1][0].context_samples  # alone and idle: kept
        engine.final_policy.load.call_s = 0.2  # as if each call of finals with extras took 0.2 s
        for utterance in range(1, 4):  # 4 finals in the rate window: 0.4 finals/s * 0.2 s = 0.08
            await settle([engine.submit(with_extras("a", utterance))])
        assert backend.batches[-1][0].context_samples
        engine.final_policy.load.call_s = 2.0  # ... 0.4/s * 2 s = 0.8 of the model's time: too much for the context
        await settle([engine.submit(with_extras("a", 9))])
        assert backend.batches[-1][0].context_samples == 0 and backend.batches[-1][0].options.beam_size == 5
        await engine.stop()

    run(scenario())


def test_context_is_dropped_while_more_speakers_wait_for_a_partial_than_half_a_batch_holds():
    async def scenario():
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=4)  # half a batch: 2
        for waiting, kept in ((2, True), (3, False)):
            blocker = await occupy(backend, engine, job("x", kind=JobKind.PARTIAL, utterance=99))
            partials = [engine.submit(job(f"p{i}", kind=JobKind.PARTIAL)) for i in range(waiting)]
            final = engine.submit(with_extras(f"f{waiting}"))
            backend.release()
            await settle([blocker, final, *partials])
            (ran,) = next(b for b in backend.batches if b[0].owner == f"f{waiting}")
            assert bool(ran.context_samples) is kept and ran.options.beam_size == 5
        await engine.stop()

    run(scenario())


def test_a_batch_report_counts_the_tier_each_final_got() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=8)
        reports: list[BatchReport] = []
        engine.observers.append(reports.append)
        await settle([engine.submit(with_extras("a"))])
        blocker = await occupy(backend, engine, job("x", kind=JobKind.PARTIAL))
        together = [engine.submit(with_extras("b")), engine.submit(with_extras("c"))]
        backend.release()
        await settle([blocker, *together])
        await engine.stop()
        assert [dict(r.tiers) for r in reports] == [{FinalTier.FULL: 1}, {}, {FinalTier.NO_CONTEXT: 2}]

    run(scenario())


class EarlyStopBackend(ScriptedBackend):
    """Texts by script; the alignment of ``stops_at``'s result ends its last word at 2 s (an early stop)."""

    def __init__(self, texts: dict[str, str]) -> None:
        super().__init__()
        self.text = lambda job: texts.get(job.prompt_text, "")
        self.stops_at: int | None = None

    def align(self, requests: list[AlignRequest]) -> list[list[AlignedWord]]:
        aligned = super().align(requests)
        for request, words in zip(requests, aligned):
            if request.job.job_id == self.stops_at:
                for i, word in enumerate(words):
                    word["start"], word["end"] = i * 0.5, (i + 1) * 0.5
        return aligned


def long_final(owner: str, prompt: str, seconds: float = 6.0, words: bool = False) -> DecodeJob:
    return DecodeJob(
        owner=owner,
        kind=JobKind.FINAL,
        audio=np.zeros(int(seconds * 16000), dtype=np.float32),
        options=DecodeOptions(word_timestamps=words),
        prompt_text=prompt,
        stream_key=(owner, 0, 0),
    )


def test_an_early_stop_is_aligned_and_its_rest_decoded_as_model_calls_of_their_own() -> None:
    async def scenario() -> None:
        backend = EarlyStopBackend({"Earlier.": "first part", "Earlier.  first part": "second part"})
        engine = started_engine(backend, max_batch_size=8)
        reports: list[BatchReport] = []
        engine.observers.append(reports.append)
        stopped = long_final("a", "Earlier.", words=True)
        backend.stops_at = stopped.job_id
        (result,) = await settle([engine.submit(stopped)])
        await engine.stop()
        assert isinstance(result, DecodeResult) and result.job_id == stopped.job_id
        assert result.text == "first part second part"
        assert [w.word.strip() for w in result.words] == result.text.split()  # aligned after the join
        # decode; align (early stop?); the rest as a job of its own: decode, align (its own check); words
        assert [len(c) for c in backend.calls] == [1, 1, 1, 1, 1]
        rest = backend.calls[2][0]
        assert rest.owner == "a" and rest.kind is JobKind.FINAL and rest.own_s == 5.0
        assert not rest.options.word_timestamps and rest.prompt_text == "Earlier.  first part"
        assert [r.repair_calls for r in reports] == [1, 2]  # the rest ran as a batch of its own

    run(scenario())


def test_an_empty_final_with_a_rolling_prompt_is_retried_without_it() -> None:
    async def scenario() -> None:
        backend = EarlyStopBackend({"": "the words"})  # text only without a rolling prompt
        engine = started_engine(backend, max_batch_size=8)
        empty = long_final("a", "loop loop loop", seconds=1.0)
        (result,) = await settle([engine.submit(empty)])
        await engine.stop()
        assert isinstance(result, DecodeResult) and result.text == "the words" and result.job_id == empty.job_id
        assert [j.prompt_text for c in backend.calls for j in c] == ["loop loop loop", ""]

    run(scenario())


def test_a_failing_repair_fails_the_job_it_repairs_and_a_closed_session_cancels_it() -> None:
    async def scenario() -> None:
        backend = EarlyStopBackend({"": "the words"})
        backend.fail_if = lambda job: job.prompt_text == ""  # the retry's call raises
        engine = started_engine(backend, max_batch_size=8)
        (failed,) = await settle([engine.submit(long_final("a", "loop", seconds=1.0))])
        assert isinstance(failed, DecodeFailed)

        backend.fail_if = None
        calls = backend.entered
        backend.hold()
        waiting = engine.submit(long_final("b", "loop", seconds=1.0))
        await entered(backend, calls + 1)
        backend.release()  # the waiting call goes on; the next one, its retry, is held
        backend.hold()
        await entered(backend, calls + 2)
        engine.cancel_owner("b")
        backend.release()
        await engine.stop()
        assert waiting.cancelled() and not engine._futures and not engine._parents

    run(scenario())


@pytest.mark.parametrize("workers", [1, 2])
def test_with_two_model_workers_a_second_batch_runs_while_the_first_decodes(workers: int) -> None:
    """``--model-workers``: each worker's loop takes the next batch while the others decode; one worker runs
    one batch at a time. Results still reach their own callers, and stop waits for every loop."""

    async def scenario() -> None:
        backend = ScriptedBackend(workers=workers)
        engine = make_engine(backend, max_batch_size=8)
        engine.start()
        first = await occupy(backend, engine, job("a", "first"))  # held in the model
        second = engine.submit(job("b", "second"))
        if workers == 2:
            await entered(backend, 2)  # the second worker took it while the first call is held
            assert engine.busy and backend.entered == 2
        else:
            await asyncio.sleep(0.2)
            assert backend.entered == 1 and engine.scheduler.queue_depth == 1
        backend.release()
        results = await settle([first, second])
        await engine.stop()
        assert [r.text for r in results] == ["first", "second"]  # type: ignore[union-attr]
        assert not engine.alive and not engine.busy and not engine._futures

    run(scenario())


def test_a_repair_step_that_raises_fails_its_job_and_the_engine_decodes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one result's repair (it once raised for a partial decoded in another language) fails that job
    with ``DecodeFailed``; the engine's loop, which every session of the process needs, goes on."""
    from stream_server.decode import repair as repair_module

    plan = repair_module.Repair.plan
    broken = long_final("a", "Earlier.")

    def plan_raising_for_one_job(self: repair_module.Repair) -> object:
        if self.job.job_id == broken.job_id:
            raise ValueError("a repair bug")
        return plan(self)

    monkeypatch.setattr(repair_module.Repair, "plan", plan_raising_for_one_job)

    async def scenario() -> None:
        engine = started_engine(ScriptedBackend(), max_batch_size=8)
        (failed,) = await settle([engine.submit(broken)])
        (after,) = await settle([engine.submit(long_final("b", "Later."))])
        alive = engine.alive
        await engine.stop()
        assert isinstance(failed, DecodeFailed) and "a repair bug" in str(failed)
        assert isinstance(after, DecodeResult) and alive
        assert not engine._futures and not engine._parents

    run(scenario())


def test_an_uploads_word_alignment_waits_while_a_final_is_queued() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        engine = started_engine(backend, max_batch_size=8)
        upload = DecodeJob("u", JobKind.OFFLINE, AUDIO, DecodeOptions(initial_prompt="w x", word_timestamps=True))
        held = await occupy(backend, engine, upload)
        final = engine.submit(job("f", "final"))
        backend.release()
        results = await settle([held, final])
        await engine.stop()
        assert [w.word.strip() for w in results[0].words] == ["w", "x"]  # type: ignore[union-attr]
        assert [[j.owner for j in call] for call in backend.calls] == [["u"], ["f"], ["u"]]  # decode, final, align

    run(scenario())


def test_each_result_carries_when_its_job_was_queued_started_and_done() -> None:
    async def scenario() -> None:
        backend = FakeBackend(latency_s=0.05)
        engine = started_engine(backend, 1)
        first = await occupy(backend, engine, job("a", "first"))
        second = engine.submit(job("b", "second"))
        await asyncio.sleep(0.1)  # the second job waits behind the held call
        backend.release()
        results = await settle([first, second])
        timings = [r.timing for r in results]  # type: ignore[union-attr]
        assert all(t is not None for t in timings)
        for t in timings:
            assert t.queued_at <= t.started_at < t.ended_at  # type: ignore[union-attr]
            assert t.decode_s >= 0.045  # type: ignore[union-attr]
        assert timings[1].queue_s >= 0.1  # type: ignore[union-attr]
        assert timings[1].started_at >= timings[0].ended_at  # type: ignore[union-attr]
        assert not engine._call_started  # nothing kept once delivered
        await engine.stop()

    run(scenario())
