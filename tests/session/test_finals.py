"""A channel's finals: one at a time in order, and speculative finals decoded during the pause."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.decode.types import JobKind
from stream_server.session.events import Final
from tests.session.support import TAIL_S, feed, make, quiet, requests, result_for, tone


def test_a_final_is_decoded_during_the_pause_that_ends_its_utterance():
    session = make(interim_results=False)
    events = feed(session, np.concatenate([tone(1.0), quiet(0.4)]))
    (spec,) = requests(events)
    assert spec.speculative and not spec.is_final and spec.job.kind is JobKind.FINAL
    assert 1.0 + TAIL_S <= spec.job.duration_s <= 1.0 + TAIL_S + 0.06  # speech plus the tail: the final's audio
    assert session.receive_decode_result(spec, result_for(spec.job, "one")) == []  # not over yet
    events = feed(session, quiet(0.3))
    assert requests(events) == []  # no second decode: the speculative one is the final
    (final,) = [e for e in events if isinstance(e, Final)]
    assert final.text == "one" and final.end == pytest.approx(1.0, abs=0.06)
    assert session.pending_finals == 0


def test_a_speculative_final_still_running_at_the_end_is_delivered_when_back():
    session = make(interim_results=False)
    (spec,) = requests(feed(session, np.concatenate([tone(1.0), quiet(0.7)])))
    assert session.pending_finals == 1
    (final,) = session.receive_decode_result(spec, result_for(spec.job, "one"))
    assert isinstance(final, Final) and final.text == "one"


def test_speech_after_the_pause_makes_the_speculation_moot():
    session = make(interim_results=False)
    (first,) = requests(feed(session, np.concatenate([tone(1.0), quiet(0.4)])))
    (second,) = requests(feed(session, np.concatenate([tone(0.8), quiet(0.4)])))
    assert second.speculative and second.job.duration_s > first.job.duration_s + 1.0  # the whole utterance
    assert session.receive_decode_result(first, result_for(first.job, "half")) == []  # ignored
    events = feed(session, quiet(0.3))
    assert requests(events) == [] and not [e for e in events if isinstance(e, Final)]
    (final,) = session.receive_decode_result(second, result_for(second.job, "whole"))
    assert final.text == "whole"


def test_a_final_waits_for_the_one_before_it_and_carries_its_text():
    """However late the previous final comes back (a busy server), the next is decoded with its text: nothing
    is speculated or asked for while it is out."""
    session = make(interim_results=False)
    (zero,) = requests(feed(session, np.concatenate([tone(1.0), quiet(0.7)])))
    assert requests(feed(session, np.concatenate([tone(1.0), quiet(0.7)]))) == []
    assert session.pending_finals == 2
    out = session.receive_decode_result(zero, result_for(zero.job, "Hello there."))
    (one,) = requests(out)
    assert one.is_final and one.job.prompt_text == "Hello there."
    (final,) = session.receive_decode_result(one, result_for(one.job, "General Kenobi."))
    assert final.text == "General Kenobi." and session.pending_finals == 0
