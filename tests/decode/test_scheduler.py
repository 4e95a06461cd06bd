"""Batching policy of ``BatchScheduler``: pure, no model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stream_server.config import Settings
from stream_server.decode.scheduler import OFFLINE_SHARE, BatchScheduler
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind

AUDIO = np.zeros(16000, dtype=np.float32)


def scheduler(
    max_batch_size: int = 16, max_batch_audio_s: float = 0.0, offline_share: float = OFFLINE_SHARE, **settings: float
) -> BatchScheduler:
    """The server's scheduler (``Settings``, window margin included), with these limits."""
    config = Settings(**settings).scheduler_config("cpu")  # type: ignore[arg-type]
    return BatchScheduler(
        replace(config, max_batch_size=max_batch_size, max_batch_audio_s=max_batch_audio_s, offline_share=offline_share)
    )


def job(owner: str, kind: JobKind, utterance: int = 0, channel: int = 0) -> DecodeJob:
    key = (owner, channel, utterance) if kind is not JobKind.OFFLINE else None
    return DecodeJob(owner=owner, kind=kind, audio=AUDIO, options=DecodeOptions(), stream_key=key)


def test_finals_go_first_oldest_first_and_alone():
    s = scheduler(max_batch_size=3)
    p1, f1, p2, f2, f3, f4 = (
        job("a", JobKind.PARTIAL, 1),
        job("b", JobKind.FINAL, 0),
        job("c", JobKind.PARTIAL, 4),
        job("d", JobKind.FINAL, 2),
        job("e", JobKind.FINAL, 2),
        job("f", JobKind.FINAL, 2),
    )
    for j in (p1, f1, p2, f2, f3, f4):
        s.add(j)
    assert s.next_batch() == [f1, f2, f3]
    assert s.next_batch() == [f4]  # no partial rides along with a final
    assert s.next_batch() == [p1, p2]
    assert s.next_batch() == []


def test_a_newer_partial_replaces_the_queued_one_in_place():
    s = scheduler(max_batch_size=8)
    old, other, new = job("a", JobKind.PARTIAL, 1), job("b", JobKind.PARTIAL, 1), job("a", JobKind.PARTIAL, 1)
    s.add(old)
    s.add(other)
    assert s.add(new) == [old]
    assert s.next_batch() == [new, other]  # 'a' keeps its place in line
    assert s.stats().superseded_partials == 1


def test_a_final_drops_its_utterances_queued_partial():
    s = scheduler()
    partial, final = job("a", JobKind.PARTIAL, 3), job("a", JobKind.FINAL, 3)
    s.add(partial)
    assert s.add(final) == [partial]
    assert s.next_batch() == [final]


def test_cancel_drops_only_that_owners_work():
    s = scheduler()
    mine = [job("a", JobKind.FINAL, 0), job("a", JobKind.PARTIAL, 1), job("a", JobKind.OFFLINE)]
    theirs = job("b", JobKind.FINAL, 0)
    for j in [*mine, theirs]:
        s.add(j)
    assert set(x.job_id for x in s.cancel("a")) == {x.job_id for x in mine}
    assert s.queue_depth == 1
    assert s.next_batch() == [theirs]


def test_uploads_get_a_share_of_every_batch_and_never_starve_streams():
    s = scheduler(max_batch_size=8, offline_share=0.25)
    uploads = [job("upload", JobKind.OFFLINE) for _ in range(100)]
    for u in uploads:
        s.add(u)
    partials = [job(f"s{i}", JobKind.PARTIAL, 0) for i in range(20)]
    finals = [job(f"s{i}", JobKind.FINAL, 1) for i in range(3)]
    for j in partials + finals:
        s.add(j)
    assert s.next_batch() == finals
    for _ in range(2):  # the two kinds take turns filling a batch first; uploads always get a quarter
        batch = s.next_batch()
        assert sum(j.kind is JobKind.OFFLINE for j in batch) == 2
        assert sum(j.kind is JobKind.PARTIAL for j in batch) == 6
    third, fourth = s.next_batch(), s.next_batch()  # 8 partials were left
    assert [j.kind for j in third].count(JobKind.PARTIAL) == 6
    assert [j.kind for j in fourth].count(JobKind.PARTIAL) == 2  # uploads fill the rest
    # with no stream work, uploads fill whole batches
    assert [j.kind for j in s.next_batch()] == [JobKind.OFFLINE] * 8


def test_a_long_upload_chunk_and_partials_take_turns_under_the_audio_budget():
    s = scheduler(max_batch_size=16, max_batch_audio_s=12.0)
    chunks = [long_job("upload", JobKind.OFFLINE, 25.0) for _ in range(3)]  # each alone is over the budget
    for c in chunks:
        s.add(c)
    kinds = []
    for _ in range(4):
        for i in range(3):  # three streams keep sending partials of their utterance
            s.add(long_job(f"s{i}", JobKind.PARTIAL, 3.0))
        kinds.append([j.kind for j in s.next_batch()])
    partials_only = [JobKind.PARTIAL] * 3
    assert kinds == [partials_only, [JobKind.OFFLINE], partials_only, [JobKind.OFFLINE]]


def test_stats_report_batches_and_owners():
    s = scheduler(max_batch_size=4)
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
        scheduler(max_batch_size=0)
    with pytest.raises(ValueError):
        scheduler().add(DecodeJob("a", JobKind.PARTIAL, AUDIO, DecodeOptions()))


def long_job(owner: str, kind: JobKind, seconds: float, utterance: int = 0) -> DecodeJob:
    key = (owner, 0, utterance) if kind is not JobKind.OFFLINE else None
    return DecodeJob(owner, kind, np.zeros(int(seconds * 16000), np.float32), DecodeOptions(), stream_key=key)


def test_audio_budget_caps_partials_but_never_finals():
    s = scheduler(max_batch_size=16, max_batch_audio_s=20.0)
    finals = [long_job(f"f{i}", JobKind.FINAL, 9.0) for i in range(3)]  # 30 s with margins: over the cap
    partials = [long_job(f"p{i}", JobKind.PARTIAL, 4.0) for i in range(5)]
    for j in finals + partials:
        s.add(j)
    assert s.next_batch() == finals
    assert s.next_batch() == partials[:4]  # 4 x 5 s = 20 s fits exactly
    assert s.next_batch() == partials[4:]
    s.add(long_job("huge", JobKind.PARTIAL, 40.0))
    assert len(s.next_batch()) == 1  # an item over the cap alone still runs


def test_the_audio_budget_counts_the_window_margin_the_backend_adds():
    s = scheduler(max_batch_size=16, max_batch_audio_s=20.0, window_margin_s=2.0)
    partials = [long_job(f"p{i}", JobKind.PARTIAL, 4.0) for i in range(5)]
    for j in partials:
        s.add(j)
    assert s.next_batch() == partials[:3]  # 3 x (4 + 2) s = 18 s; a fourth would make 24 s


def test_put_back_requeues_ahead_of_newcomers_and_drops_replaced_partials():
    # the engine hands back the calls of a batch it did not run once a final is queued (rule 5)
    s = scheduler(max_batch_size=8)
    a, b, upload = job("a", JobKind.PARTIAL), job("b", JobKind.PARTIAL), job("u", JobKind.OFFLINE)
    for j in (a, b, upload):
        s.add(j)
    taken = s.next_batch()
    assert set(map(id, taken)) == {id(a), id(b), id(upload)}
    d = job("d", JobKind.PARTIAL)
    s.add(d)
    taken += s.next_batch()
    newer_b, c, final, final_d, later_upload = (
        job("b", JobKind.PARTIAL),
        job("c", JobKind.PARTIAL),
        job("f", JobKind.FINAL),
        job("d", JobKind.FINAL),  # d's utterance ended while its partial was out
        job("v", JobKind.OFFLINE),
    )
    for j in (newer_b, c, final, final_d, later_upload):
        s.add(j)
    assert s.finals_waiting
    assert s.put_back(taken) == [d, b]  # replaced while out: superseded, not run
    assert s.next_batch() == [final, final_d]
    assert not s.finals_waiting
    rest = s.next_batch()
    assert [j for j in rest if j.kind is JobKind.PARTIAL] == [a, newer_b, c]  # put back first, then newcomers
    assert [j for j in rest if j.kind is JobKind.OFFLINE] == [upload, later_upload]
    stats = s.stats()
    assert stats.items == 2 + len(rest) and stats.superseded_partials == 2


def test_a_queued_speculative_final_is_dropped_once_its_utterance_moves_on():
    """The session asks for a final at every pause long enough to end the utterance; one still queued when a
    newer job of the same utterance arrives is moot."""
    s = scheduler(max_batch_size=8)
    first_pause, other = job("a", JobKind.FINAL, 3), job("b", JobKind.FINAL, 3)
    s.add(first_pause)
    s.add(other)
    resumed = job("a", JobKind.PARTIAL, 3)  # the speaker went on
    assert s.add(resumed) == [first_pause]
    second_pause = job("a", JobKind.FINAL, 3)
    assert s.add(second_pause) == [resumed]
    real_end = job("a", JobKind.FINAL, 3)  # the end came at another point: its own final
    assert s.add(real_end) == [second_pause]
    assert s.add(job("a", JobKind.FINAL, 4)) == []  # the next utterance leaves it alone
    assert s.next_batch()[:2] == [other, real_end]
    assert s.stats().superseded_partials == 3


def test_a_connection_with_many_channels_takes_no_more_than_its_share_while_others_wait():
    s = scheduler(max_batch_size=4)
    heavy = [job("heavy", JobKind.FINAL, utterance=0, channel=c) for c in range(6)]
    light = [job("light", JobKind.FINAL), job("other", JobKind.FINAL)]
    for j in heavy + light:
        s.add(j)
    assert s.next_batch() == [heavy[0], heavy[1], *light]  # queue order, two each
    assert s.next_batch() == heavy[2:]
    for c in range(6):
        s.add(job("heavy", JobKind.PARTIAL, utterance=1, channel=c))
    s.add(job("light", JobKind.PARTIAL, utterance=1))
    assert [j.owner for j in s.next_batch()] == ["heavy", "light", "heavy", "heavy"]
    assert [j.owner for j in s.next_batch()] == ["heavy"] * 3  # alone, it takes what there is


def test_follow_up_work_goes_to_the_front_of_its_queue():
    s = scheduler(max_batch_size=1)
    first, repair = job("a", JobKind.FINAL), job("b", JobKind.FINAL, utterance=1)
    s.add(first)
    s.add_first(repair)
    assert s.next_batch() == [repair] and s.next_batch() == [first]
    with pytest.raises(ValueError):
        s.add_first(job("c", JobKind.PARTIAL))
