"""Batching policy of ``BatchScheduler``: pure, no model."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.decode.scheduler import BatchScheduler
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind

AUDIO = np.zeros(16000, dtype=np.float32)


def job(owner: str, kind: JobKind, utterance: int = 0, channel: int = 0) -> DecodeJob:
    key = (owner, channel, utterance) if kind is not JobKind.OFFLINE else None
    return DecodeJob(owner=owner, kind=kind, audio=AUDIO, options=DecodeOptions(), stream_key=key)


def test_finals_go_before_partials_oldest_first():
    s = BatchScheduler(max_batch_size=3)
    p1, f1, p2, f2 = (
        job("a", JobKind.PARTIAL, 1),
        job("b", JobKind.FINAL, 0),
        job("c", JobKind.PARTIAL, 4),
        job("d", JobKind.FINAL, 2),
    )
    for j in (p1, f1, p2, f2):
        s.add(j)
    assert s.next_batch() == [f1, f2, p1]
    assert s.next_batch() == [p2]
    assert s.next_batch() == []


def test_a_newer_partial_replaces_the_queued_one_in_place():
    s = BatchScheduler(max_batch_size=8)
    old, other, new = job("a", JobKind.PARTIAL, 1), job("b", JobKind.PARTIAL, 1), job("a", JobKind.PARTIAL, 1)
    s.add(old)
    s.add(other)
    assert s.add(new) == [old]
    assert s.next_batch() == [new, other]  # 'a' keeps its place in line
    assert s.stats().superseded_partials == 1


def test_a_final_drops_its_utterances_queued_partial():
    s = BatchScheduler()
    partial, final = job("a", JobKind.PARTIAL, 3), job("a", JobKind.FINAL, 3)
    s.add(partial)
    assert s.add(final) == [partial]
    assert s.next_batch() == [final]


def test_cancel_drops_only_that_owners_work():
    s = BatchScheduler()
    mine = [job("a", JobKind.FINAL, 0), job("a", JobKind.PARTIAL, 1), job("a", JobKind.OFFLINE)]
    theirs = job("b", JobKind.FINAL, 0)
    for j in [*mine, theirs]:
        s.add(j)
    assert set(x.job_id for x in s.cancel("a")) == {x.job_id for x in mine}
    assert s.queue_depth == 1
    assert s.next_batch() == [theirs]


def test_uploads_get_a_share_of_every_batch_and_never_starve_streams():
    s = BatchScheduler(max_batch_size=8, offline_share=0.25)
    uploads = [job("upload", JobKind.OFFLINE) for _ in range(100)]
    for u in uploads:
        s.add(u)
    partials = [job(f"s{i}", JobKind.PARTIAL, 0) for i in range(10)]
    finals = [job(f"s{i}", JobKind.FINAL, 1) for i in range(3)]
    for j in partials + finals:
        s.add(j)
    batch = s.next_batch()
    assert batch[:3] == finals
    assert sum(j.kind is JobKind.OFFLINE for j in batch) == 2  # a quarter of 8
    assert sum(j.kind is JobKind.PARTIAL for j in batch) == 3
    # with no stream work, uploads fill whole batches
    s.next_batch(), s.next_batch(), s.next_batch()
    assert all(j.kind is JobKind.OFFLINE for j in s.next_batch())


def test_stats_report_batches_and_owners():
    s = BatchScheduler(max_batch_size=4)
    for owner in "abc":
        s.add(job(owner, JobKind.FINAL))
    s.next_batch()
    s.add(job("a", JobKind.FINAL))
    s.next_batch()
    stats = s.stats()
    assert (stats.batches, stats.items, stats.max_batch_size_seen, stats.max_owners_in_batch) == (2, 4, 3, 3)
    assert stats.batch_size_histogram == {1: 1, 3: 1}
    assert stats.queue_depth == 0


def test_a_partial_needs_a_key_and_batch_size_is_positive():
    with pytest.raises(ValueError):
        BatchScheduler(max_batch_size=0)
    with pytest.raises(ValueError):
        BatchScheduler().add(DecodeJob("a", JobKind.PARTIAL, AUDIO, DecodeOptions()))


def long_job(owner: str, kind: JobKind, seconds: float, utterance: int = 0) -> DecodeJob:
    key = (owner, 0, utterance) if kind is not JobKind.OFFLINE else None
    return DecodeJob(owner, kind, np.zeros(int(seconds * 16000), np.float32), DecodeOptions(), stream_key=key)


def test_audio_budget_caps_partials_but_never_finals():
    s = BatchScheduler(max_batch_size=16, max_batch_audio_s=20.0)
    finals = [long_job(f"f{i}", JobKind.FINAL, 9.0) for i in range(3)]  # 30 s with margins: over the cap
    partials = [long_job(f"p{i}", JobKind.PARTIAL, 4.0) for i in range(4)]
    for j in finals + partials:
        s.add(j)
    assert s.next_batch() == finals  # every final, no partial: the budget is spent
    batch = s.next_batch()
    assert batch == partials[:4][: len(batch)] and len(batch) == 4  # 4 x 5 s = 20 s fits exactly
    s.add(long_job("huge", JobKind.PARTIAL, 40.0))
    assert len(s.next_batch()) == 1  # an item over the cap alone still runs


def test_a_batch_with_finals_takes_no_partial_longer_than_its_longest_final():
    def timed(owner: str, kind: JobKind, seconds: float) -> DecodeJob:
        audio = np.zeros(int(seconds * 16000), dtype=np.float32)
        return DecodeJob(owner=owner, kind=kind, audio=audio, options=DecodeOptions(), stream_key=(owner, 0, 0))

    s = BatchScheduler(max_batch_size=8)
    long_partial, final, short_partial = (
        timed("a", JobKind.PARTIAL, 12.0),
        timed("b", JobKind.FINAL, 3.0),
        timed("c", JobKind.PARTIAL, 2.5),
    )
    for j in (long_partial, final, short_partial):
        s.add(j)
    assert s.next_batch() == [final, short_partial]
    assert s.next_batch() == [long_partial]  # kept its place; a batch without finals takes any length
