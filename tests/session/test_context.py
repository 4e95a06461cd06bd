"""Acoustic context: a final also hears the speech before it, whose text is forced first."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.session.events import Final
from tests.session.support import RATE, TAIL_S, feed, make, pcm, quiet, requests, result_for, tone


def test_a_final_hears_the_utterance_before_it_and_is_given_its_text():
    session = make(interim_results=False, final_context_s=10.0)
    audio = np.concatenate([tone(1.0), quiet(0.8), tone(1.2, amplitude=0.25), quiet(1.0)])
    events = feed(session, audio)
    first = next(r for r in requests(events) if r.speculative)
    assert first.job.context_samples == 0 and first.job.context_text == ""  # nothing before it
    out = session.receive_decode_result(first, result_for(first.job, "one"))
    assert [e.text for e in out if isinstance(e, Final)] == ["one"]
    (second,) = requests(out) or requests(feed(session, quiet(0.1)))
    job = second.job
    # the second's audio starts where the first final's did (its pre-roll included) and the first's text,
    # as a sentence, is forced as the start of the transcript instead of sitting in the prompt
    assert job.context_text == "One." and job.prompt_text == ""
    assert job.context_samples == pytest.approx(1.5 * RATE, abs=0.06 * RATE)  # speech at 1.8 s, pre-roll 0.3 s
    sent = np.frombuffer(pcm(audio), dtype="<i2").astype(np.float32) / 32768  # what the session received
    np.testing.assert_array_equal(job.audio, sent[: len(job.audio)])  # context and utterance: the stream itself
    assert job.own_s == pytest.approx(1.2 + 0.3 + TAIL_S, abs=0.07)  # pre-roll, speech, tail
    (final,) = session.receive_decode_result(second, result_for(job, "two"))
    assert final.text == "two"


def test_the_context_reaches_back_as_far_as_allowed_and_leaves_older_text_in_the_prompt():
    session = make(interim_results=False, final_context_s=4.5)
    chunk = np.concatenate([tone(1.0), quiet(1.0)])
    texts = ["alpha", "beta", "gamma"]
    for text in texts:
        (req,) = [r for r in requests(feed(session, chunk)) if r.is_final or r.speculative][-1:]
        session.receive_decode_result(req, result_for(req.job, text))
    (last,) = [r for r in requests(feed(session, chunk)) if r.speculative][-1:]
    # the finals' audio started at 0, 1.7 and 3.7 s (speech 0.3 s later: the pre-roll), this one's at 5.7 s:
    # 4.5 s back reaches "beta" but not "alpha", which stays in the prompt
    assert last.job.context_text == "Beta. Gamma."
    assert last.job.prompt_text == "Alpha."
    assert last.job.context_samples / RATE == pytest.approx(4.0, abs=0.1)


def test_no_context_after_a_final_that_looks_hallucinated():
    session = make(interim_results=False, final_context_s=10.0)
    chunk = np.concatenate([tone(1.0), quiet(1.0)])
    (first,) = [r for r in requests(feed(session, chunk)) if r.speculative]
    session.receive_decode_result(first, result_for(first.job, "la la la la", compression_ratio=3.1))
    (second,) = [r for r in requests(feed(session, chunk)) if r.speculative]
    assert second.job.context_samples == 0 and second.job.context_text == "" and second.job.prompt_text == ""


def test_without_context_a_job_is_its_own_audio_with_the_whole_prompt():
    session = make(interim_results=False, final_context_s=10.0)
    chunk = np.concatenate([tone(1.0), quiet(1.0)])
    (first,) = [r for r in requests(feed(session, chunk)) if r.speculative]
    session.receive_decode_result(first, result_for(first.job, "alpha"))
    (second,) = [r for r in requests(feed(session, chunk)) if r.speculative]
    plain = second.job.without_context()
    assert plain.job_id == second.job.job_id and plain.context_samples == 0 and plain.context_text == ""
    assert plain.prompt_text == "Alpha." and len(plain.audio) == len(second.job.own_audio)
    np.testing.assert_array_equal(plain.audio, second.job.own_audio)


def test_no_context_when_final_context_s_is_zero():
    session = make(interim_results=False, final_context_s=0.0)
    chunk = np.concatenate([tone(1.0), quiet(1.0)])
    (first,) = [r for r in requests(feed(session, chunk)) if r.speculative]
    session.receive_decode_result(first, result_for(first.job, "alpha"))
    (second,) = [r for r in requests(feed(session, chunk)) if r.speculative]
    assert second.job.context_samples == 0 and second.job.prompt_text == "Alpha."
