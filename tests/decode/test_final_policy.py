"""``final_policy``: which tier a final gets, as a pure function of the job, ``now``, the queue and the load."""

from __future__ import annotations

import numpy as np

from stream_server.config import Settings
from stream_server.decode.final_policy import FinalPolicy, FinalTier, LoadEstimate, QueueView, apply, offers_choice
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind

IDLE = QueueView(batch_size=1, finals_waiting=False, partials_waiting=0, max_batch_size=16)


def final(context: bool = True, late_beam: int | None = 1, enqueued_at: float = 100.0) -> DecodeJob:
    """A final as a session builds it: 1 s of context before 1 s of its own, the final beam 5."""
    return DecodeJob(
        owner="s",
        kind=JobKind.FINAL,
        audio=np.zeros(32000 if context else 16000, dtype=np.float32),
        options=DecodeOptions(beam_size=5),
        late_options=DecodeOptions(beam_size=late_beam) if late_beam is not None else None,
        prompt_text="Earlier.",
        enqueued_at=enqueued_at,
        context_samples=16000 if context else 0,
        context_text="Before." if context else "",
    )


def policy() -> FinalPolicy:
    return FinalPolicy(Settings().final_policy())  # context while load <= 0.5; late after 0.3 s


def test_an_idle_server_gives_a_final_everything_it_asked_for() -> None:
    job = final()
    assert policy().choose(job, 100.1, IDLE) is FinalTier.FULL
    assert apply(job, FinalTier.FULL) is job


def test_any_crowding_costs_the_context_but_not_the_beam() -> None:
    crowded = [
        QueueView(2, False, 0, 16),  # another final in the batch
        QueueView(1, True, 0, 16),  # finals still queued
        QueueView(1, False, 9, 16),  # more speakers wait for a partial than half a batch holds
    ]
    for queue in crowded:
        assert policy().choose(final(), 100.1, queue) is FinalTier.NO_CONTEXT, queue
    assert policy().choose(final(), 100.1, QueueView(1, False, 8, 16)) is FinalTier.FULL  # half a batch: fine
    job = final()
    plain = apply(job, FinalTier.NO_CONTEXT)
    assert plain.context_samples == 0 and len(plain.audio) == 16000 and plain.prompt_text == "Earlier. Before."
    assert plain.options.beam_size == 5 and plain.job_id == job.job_id


def test_a_final_without_context_keeps_its_beam_however_crowded() -> None:
    assert policy().choose(final(context=False), 100.1, QueueView(4, True, 16, 16)) is FinalTier.FULL


def test_a_final_that_waited_is_decoded_late_plain_and_greedy() -> None:
    job = final()
    assert policy().choose(job, 100.29, IDLE) is FinalTier.FULL
    assert policy().choose(job, 100.31, IDLE) is FinalTier.LATE
    late = apply(job, FinalTier.LATE)
    assert late.job_id == job.job_id and late.context_samples == 0 and late.options.beam_size == 1
    assert late.late_options is None and late.prompt_text == "Earlier. Before."


def test_the_load_estimate_drops_the_context_when_finals_would_take_over_half_the_model() -> None:
    p = policy()
    for second in range(4):  # 4 finals in the 10 s window: 0.4 per second
        p.load.final_arrived(90.0 + second)
    p.load.call_took(0.2)  # 0.4/s x 0.2 s = 0.08
    assert p.choose(final(), 100.1, IDLE) is FinalTier.FULL
    p.load.call_took(10.0)  # mean 0.8 x 0.2 + 0.2 x 10 = 2.16 s: 0.86 of the model's time
    assert p.choose(final(), 100.1, IDLE) is FinalTier.NO_CONTEXT


def test_load_counts_only_the_last_ten_seconds() -> None:
    load = LoadEstimate()
    load.call_took(1.0)
    for at in (0.0, 5.0, 9.0):
        load.final_arrived(at)
    assert load.load(9.5) == 0.3
    assert load.load(14.0) == 0.2  # the arrival at 0 s is over 10 s old
    assert load.load(30.0) == 0.0


def test_only_a_job_with_context_or_a_late_beam_of_its_own_offers_a_choice() -> None:
    assert offers_choice(final()) and offers_choice(final(context=False))
    assert not offers_choice(final(context=False, late_beam=None))
    assert not offers_choice(final(context=False, late_beam=5))  # the late beam is the final beam
