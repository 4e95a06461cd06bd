"""The session state machine with a scripted VAD and a fake decoder: no model, no socket, milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.decode.types import JobKind
from stream_server.errors import ProtocolError
from stream_server.session.events import DecodeError, DecodeRequested, Final, Partial, SpeechStarted
from stream_server.session.machine import StreamingSession
from tests.session.support import RATE, make, pcm, quiet, result_for, tone


def requests(events, final: bool | None = None) -> list[DecodeRequested]:
    """Decode requests; ``final=True``: final decodes, speculative ones included (audio fed in one piece ends
    its utterances before any pause is long enough to speculate on)."""
    return [
        e
        for e in events
        if isinstance(e, DecodeRequested) and (final is None or (e.is_final or e.speculative) == final)
    ]


def resolve_in_turn(session: StreamingSession, events) -> tuple[list[DecodeRequested], list[Final]]:
    """Answer final decodes as the session asks for them (one at a time per channel: the next is asked for once
    the one before it is in); returns the requests and the finals, in order."""
    asked, finals = [], [e for e in events if isinstance(e, Final)]
    pending = requests(events, final=True)
    while pending:
        req = pending.pop(0)
        asked.append(req)
        out = session.receive_decode_result(req, result_for(req.job, f"text {req.utterance_id}"))
        pending += requests(out, final=True)
        finals += [e for e in out if isinstance(e, Final)]
    return asked, finals


def test_two_utterances_are_cut_and_finalized_in_order():
    session = make(interim_results=False)
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0), tone(1.2), quiet(1.0)])))
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert [s.utterance_id for s in starts] == [0, 1]
    assert starts[0].start == pytest.approx(0.0, abs=0.06)
    assert starts[1].start == pytest.approx(2.0, abs=0.2)
    (first,) = requests(events, final=True)  # the second final waits for the first: its prompt needs that text
    assert first.utterance_id == 0 and first.job.kind is JobKind.FINAL
    # the decoded audio covers the speech with a pre-roll and a short silent tail
    assert 1.0 <= first.job.duration_s <= 1.0 + 0.3 + 0.3 + 0.06

    out = session.receive_decode_result(first, result_for(first.job, "one"))
    (final_one,) = [e for e in out if isinstance(e, Final)]
    assert (final_one.utterance_id, final_one.text) == (0, "one")
    assert final_one.start == pytest.approx(0.0, abs=0.06) and final_one.end == pytest.approx(1.0, abs=0.06)
    (second,) = requests(out, final=True)
    assert second.utterance_id == 1 and second.job.prompt_text == "One."  # the final as a sentence (prompt.py)
    out = session.receive_decode_result(second, result_for(second.job, "two"))
    assert [(e.utterance_id, e.text) for e in out if isinstance(e, Final)] == [(1, "two")]


def test_exactly_one_final_per_utterance():
    session = make(interim_results=False)
    (req,) = requests(session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0)]))), final=True)
    assert len(session.receive_decode_result(req, result_for(req.job, "hello"))) == 1
    assert session.receive_decode_result(req, result_for(req.job, "again")) == []
    assert requests(session.finalize()) == []  # nothing open: nothing to flush


def test_partials_follow_the_interval_and_stop_at_the_final():
    session = make(partial_interval_ms=500)
    data = pcm(tone(2.6))
    chunk = 3200  # 100 ms
    events = [e for i in range(0, len(data), chunk) for e in session.receive_audio(data[i : i + chunk])]
    partials = requests(events, final=False)
    # the first partial waits for 1 s of audio, then one per 500 ms of new audio
    assert len(partials) == 4
    assert all(p.job.kind is JobKind.PARTIAL for p in partials)
    assert [round(p.job.duration_s, 1) for p in partials] == sorted(round(p.job.duration_s, 1) for p in partials)
    shown = session.receive_decode_result(partials[1], result_for(partials[1].job, "hello there"))
    assert [(p.text, p.stable_text) for p in shown if isinstance(p, Partial)] == [("hello there", "")]
    # an older partial arriving late is dropped
    assert session.receive_decode_result(partials[0], result_for(partials[0].job, "hello")) == []
    shown = session.receive_decode_result(partials[2], result_for(partials[2].job, "hello there my friend"))
    assert shown[0].stable_text == "hello there"
    (final,) = requests(session.receive_audio(pcm(quiet(1.0))), final=True)
    # a partial landing after the final was requested is dropped
    assert session.receive_decode_result(partials[3], result_for(partials[3].job, "late")) == []
    assert isinstance(session.receive_decode_result(final, result_for(final.job, "x"))[0], Final)


def test_no_partials_when_interim_results_are_off():
    session = make(interim_results=False)
    assert requests(session.receive_audio(pcm(tone(3.0))), final=False) == []


def test_finalize_flushes_and_the_stream_goes_on():
    session = make(interim_results=False)
    session.receive_audio(pcm(tone(1.0)))
    (req,) = requests(session.finalize(), final=True)
    assert req.utterance_id == 0
    session.receive_decode_result(req, result_for(req.job, "zero"))
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0)])))
    assert [r.utterance_id for r in requests(events, final=True)] == [1]


def test_close_stream_flushes_then_done_after_the_last_final():
    session = make(interim_results=False)
    session.receive_audio(pcm(tone(1.0)))
    (req,) = requests(session.close(), final=True)
    assert not session.done
    with pytest.raises(ProtocolError):
        session.receive_audio(pcm(tone(0.1)))
    session.receive_decode_result(req, result_for(req.job, "bye"))
    assert session.done
    assert session.audio_seconds == pytest.approx(1.0)


def test_rolling_prompt_carries_text_and_resets_after_a_suspicious_final():
    session = make(interim_results=False)
    chunk = pcm(np.concatenate([tone(1.0), quiet(1.0)]))
    (first,) = requests(session.receive_audio(chunk), final=True)
    assert first.job.prompt_text == ""
    session.receive_decode_result(first, result_for(first.job, "alpha beta."))
    (second,) = requests(session.receive_audio(chunk), final=True)
    assert second.job.prompt_text == "Alpha beta."
    session.receive_decode_result(second, result_for(second.job, "gamma."))
    (third,) = requests(session.receive_audio(chunk), final=True)
    assert third.job.prompt_text == "Alpha beta. Gamma."
    session.receive_decode_result(third, result_for(third.job, "la la la la", compression_ratio=3.1))
    (fourth,) = requests(session.receive_audio(chunk), final=True)
    assert fourth.job.prompt_text == ""


def test_rolling_prompt_is_bounded_and_dropped_after_long_silence():
    session = make(interim_results=False, prompt_max_tokens=10, prompt_reset_silence_s=5.0)
    chunk = pcm(np.concatenate([tone(1.0), quiet(1.0)]))
    (first,) = requests(session.receive_audio(chunk), final=True)
    session.receive_decode_result(first, result_for(first.job, "word " * 30))
    (second,) = requests(session.receive_audio(chunk), final=True)
    assert 0 < len(second.job.prompt_text) <= 40
    session.receive_decode_result(second, result_for(second.job, "kept"))
    (third,) = requests(session.receive_audio(pcm(np.concatenate([quiet(6.0), tone(1.0), quiet(1.0)]))), final=True)
    assert third.job.prompt_text == ""


def test_initial_prompt_goes_into_the_decode_options():
    session = make(prompt="Kubernetes, Grafana")
    (req,) = requests(session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0)]))), final=True)
    assert req.job.options.initial_prompt == "Kubernetes, Grafana"


def test_max_length_cut_at_the_quietest_point():
    # 8 s of speech with a softer (but still voiced) stretch around 5.5 s; the limit is 6 s
    audio = np.concatenate([tone(5.4), tone(0.2, amplitude=0.1), tone(2.4), quiet(1.0)])
    session = make(interim_results=False, max_utterance_s=6.0)
    events = session.receive_audio(pcm(audio))
    finals, _ = resolve_in_turn(session, events)
    assert len(finals) == 2
    assert [e.utterance_id for e in events if isinstance(e, SpeechStarted)] == [0, 1]
    cut = finals[0].job.duration_s
    assert 5.3 <= cut <= 5.7  # at the soft stretch, inside the last 3 s before the limit
    total = sum(f.job.duration_s for f in finals)
    assert total == pytest.approx(8.0 + 0.3, abs=0.1)  # nothing lost, nothing doubled (plus the silent tail)


def test_bytes_that_split_samples_and_frames_decode_the_same():
    audio = np.concatenate([tone(1.0), quiet(1.0), tone(1.0), quiet(1.0)])
    data = pcm(audio)
    whole = make(interim_results=False)
    pieces = make(interim_results=False)
    expected, _ = resolve_in_turn(whole, whole.receive_audio(data))
    events = []
    for i in range(0, len(data), 333):  # odd sizes: half samples, never frame-aligned
        events += pieces.receive_audio(data[i : i + 333])
    got, _ = resolve_in_turn(pieces, events)
    assert len(got) == len(expected) == 2
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a.job.audio, b.job.audio)


def test_channels_are_split_and_independent():
    left = np.concatenate([tone(1.0), quiet(1.6)])
    right = np.concatenate([quiet(1.0), tone(0.6), quiet(1.0)])
    stereo = np.stack([left, right], axis=1).reshape(-1)
    session = make(interim_results=False, channels=2)
    events = session.receive_audio(pcm(stereo))
    finals = requests(events, final=True)
    assert sorted((f.channel, f.utterance_id) for f in finals) == [(0, 0), (1, 0)]
    by_channel = {f.channel: f for f in finals}
    right_start = [e for e in events if isinstance(e, SpeechStarted) and e.channel == 1][0].start
    assert right_start == pytest.approx(1.0, abs=0.06)
    assert by_channel[0].job.stream_key != by_channel[1].job.stream_key
    out = session.receive_decode_result(by_channel[1], result_for(by_channel[1].job, "right"))
    assert [(f.channel, f.text) for f in out] == [(1, "right")]


def test_a_failed_final_reports_an_error_and_keeps_order():
    session = make(interim_results=False)
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0), tone(1.0), quiet(1.0)])))
    (first,) = requests(events, final=True)
    out = session.receive_decode_failure(first, "boom")
    assert isinstance(out[0], DecodeError)
    assert [(f.utterance_id, f.text) for f in out if isinstance(f, Final)] == [(0, "")]
    (second,) = requests(out, final=True)  # the session goes on with the next final
    out = session.receive_decode_result(second, result_for(second.job, "two"))
    assert [(f.utterance_id, f.text) for f in out if isinstance(f, Final)] == [(1, "two")]
    assert session.backlog_seconds == 0


def test_backlog_counts_audio_awaiting_finals():
    session = make(interim_results=False)
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0), tone(2.0), quiet(1.0)])))
    (first,) = requests(events, final=True)
    waiting = 2.0 + 0.3 + 0.3  # the second utterance, not asked for yet, counts too
    assert session.backlog_seconds == pytest.approx(first.job.duration_s + waiting, abs=0.07)
    (second,) = requests(session.receive_decode_result(first, result_for(first.job, "a")), final=True)
    assert session.backlog_seconds == pytest.approx(second.job.duration_s)


def feed(session: StreamingSession, audio: np.ndarray, chunk_s: float = 0.05) -> list:
    """Stream ``audio`` in real-time-sized chunks, as a live client does."""
    step = int(chunk_s * RATE)
    return [e for i in range(0, len(audio), step) for e in session.receive_audio(pcm(audio[i : i + step]))]


def test_a_final_is_decoded_during_the_pause_that_ends_its_utterance():
    session = make(interim_results=False)
    events = feed(session, np.concatenate([tone(1.0), quiet(0.4)]))
    (spec,) = requests(events)
    assert spec.speculative and not spec.is_final and spec.job.kind is JobKind.FINAL
    assert 1.0 + 0.3 <= spec.job.duration_s <= 1.0 + 0.3 + 0.06  # speech plus the tail: the final's audio
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


# --- acoustic context (final_context_s)


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
    assert job.own_s == pytest.approx(1.2 + 0.3 + 0.3, abs=0.07)  # pre-roll, speech, tail
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
