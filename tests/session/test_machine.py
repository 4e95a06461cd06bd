"""The session state machine with a scripted VAD and a fake decoder: no model, no socket, milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.decode.types import DecodeTiming, JobKind
from stream_server.errors import ProtocolError
from stream_server.session.events import DecodeError, DecodeRequested, Final, Partial, SpeechEnded, SpeechStarted
from tests.session.support import RATE, TAIL_S, feed, make, pcm, quiet, requests, resolve_in_turn, result_for, tone


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


# --- per-channel feeds, clear, finalize of one channel, mixdown, commit-only streams, end reasons, languages


def of(kind, events):
    return [e for e in events if isinstance(e, kind)]


def finals_asked(events) -> list[DecodeRequested]:
    return [e for e in of(DecodeRequested, events) if e.awaits_final]


def answer(session, request: DecodeRequested, text: str, language: str = "en") -> list:
    return session.receive_decode_result(request, result_for(request.job, text, language=language))


def test_each_channel_can_be_fed_on_its_own_in_any_chunking():
    session = make(interim_results=False, channels=2)
    data = pcm(np.concatenate([tone(1.0), quiet(1.0)]))
    events = [e for i in range(0, len(data), 301) for e in session.receive_channel_audio(1, data[i : i + 301])]
    assert [(e.channel, e.utterance_id) for e in of(SpeechStarted, events)] == [(1, 0)]
    (request,) = finals_asked(events)
    assert request.channel == 1 and request.job.own_s == pytest.approx(1.0 + TAIL_S, abs=0.05)  # speech and tail
    assert session.receive_channel_audio(0, pcm(quiet(0.5))) == []  # the other channel heard only silence
    assert session.audio_seconds == pytest.approx(2.0)
    with pytest.raises(ProtocolError):
        session.receive_channel_audio(2, b"\0\0")


def test_a_mixed_down_stream_is_one_channel_of_the_average():
    same = np.stack([tone(1.0), tone(1.0)], axis=1).reshape(-1)
    session = make(interim_results=False, channels=2, mixdown=True)
    events = session.receive_audio(pcm(np.concatenate([same, np.zeros(2 * RATE, np.float32)])))
    (request,) = finals_asked(events)
    assert request.channel == 0
    np.testing.assert_allclose(request.job.audio[: RATE // 2], pcm_round(tone(1.0))[: RATE // 2], atol=1e-6)
    opposite = np.stack([tone(1.0), -tone(1.0)], axis=1).reshape(-1)  # cancels out: silence
    assert of(SpeechStarted, make(channels=2, mixdown=True).receive_audio(pcm(opposite))) == []
    with pytest.raises(ProtocolError):
        session.receive_channel_audio(0, b"\0\0")


def pcm_round(audio: np.ndarray) -> np.ndarray:
    return np.frombuffer(pcm(audio), dtype="<i2").astype(np.float32) / 32768


def test_finalize_of_one_channel_leaves_the_others_open():
    session = make(interim_results=False, channels=2)
    session.receive_audio(pcm(np.stack([tone(1.0), tone(1.0)], axis=1).reshape(-1)))
    events = session.finalize(1)
    assert [(e.channel, e.reason) for e in of(SpeechEnded, events)] == [(1, "finalize")]
    assert [r.channel for r in finals_asked(events)] == [1]
    assert session.pending_finals == 1  # channel 0's utterance is still open
    assert [r.channel for r in finals_asked(session.finalize())] == [0]


def test_without_endpointing_pauses_end_nothing_and_finalize_commits():
    session = make(interim_results=False, endpointing_ms=None)
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(2.0), tone(1.0), quiet(1.0)])))
    assert len(of(SpeechStarted, events)) == 1 and of(SpeechEnded, events) == []
    assert of(DecodeRequested, events) == []  # no speculative finals either
    events = session.finalize()
    (ended,) = of(SpeechEnded, events)
    assert ended.reason == "finalize" and ended.end == pytest.approx(4.0, abs=0.06)
    (request,) = finals_asked(events)
    assert request.job.own_s == pytest.approx(5.0)  # everything up to the commit, pauses included
    (final,) = of(Final, answer(session, request, "one two"))
    assert final.reason == "finalize"


@pytest.mark.parametrize("reason", ["endpoint", "finalize", "close", "max_length"])
def test_speech_ended_comes_before_the_final_and_both_say_why(reason):
    session = make(interim_results=False, max_utterance_s=3.0)
    audio = {"endpoint": np.concatenate([tone(1.0), quiet(1.0)]), "max_length": tone(3.5)}.get(reason, tone(1.0))
    events = session.receive_audio(pcm(audio))
    if reason == "finalize":
        events = session.finalize()
    elif reason == "close":
        events = session.close()
    ended = of(SpeechEnded, events)[0]
    request = finals_asked(events)[0]
    assert events.index(ended) < events.index(request)
    assert (ended.utterance_id, ended.reason) == (0, reason)
    (final,) = of(Final, answer(session, request, "text"))
    assert (final.utterance_id, final.reason, final.end) == (0, reason, ended.end)


def test_clear_discards_the_open_utterance_but_not_the_finals_asked_for():
    session = make(interim_results=False)
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0), tone(1.0)])))
    (first,) = finals_asked(events)
    assert session.pending_finals == 1
    session.clear()
    assert session.pending_finals == 1  # utterance 0 still awaits its final; utterance 1 is gone
    assert finals_asked(session.receive_audio(pcm(quiet(1.0)))) == []
    assert [f.utterance_id for f in of(Final, answer(session, first, "one"))] == [0]
    events = session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0)])))
    assert [e.utterance_id for e in of(SpeechStarted, events)] == [2]
    (second,) = finals_asked(events)
    assert second.job.prompt_text == "One."
    (final,) = of(Final, answer(session, second, "three"))
    assert final.utterance_id == 2 and session.pending_finals == 0


def test_after_clear_no_context_reaches_into_the_discarded_audio():
    session = make(interim_results=False, final_context_s=10.0)
    (first,) = finals_asked(session.receive_audio(pcm(np.concatenate([tone(1.0), quiet(1.0)]))))
    answer(session, first, "one")
    session.receive_audio(pcm(tone(1.0)))
    session.clear()
    (second,) = finals_asked(session.receive_audio(pcm(np.concatenate([quiet(0.5), tone(1.0), quiet(1.0)]))))
    assert second.job.context_samples == 0 and second.job.prompt_text == "One."


def test_a_change_of_language_resets_the_prompt_and_the_context():
    session = make(interim_results=False, final_context_s=10.0)
    chunk = pcm(np.concatenate([tone(1.0), quiet(1.0)]))
    (first,) = finals_asked(session.receive_audio(chunk))
    answer(session, first, "hello there", language="en")
    (second,) = finals_asked(session.receive_audio(chunk))
    assert second.job.context_text == "Hello there."  # same language so far: the context carries it
    answer(session, second, "bonjour", language="fr")
    (third,) = finals_asked(session.receive_audio(chunk))
    assert (third.job.context_text, third.job.prompt_text) == ("Bonjour.", "")  # nothing English carried
    answer(session, third, "merci", language="fr")
    (fourth,) = finals_asked(session.receive_audio(chunk))
    assert fourth.job.context_text == "Bonjour. Merci."


def test_the_languages_hint_reaches_every_decode():
    session = make(languages=("en", "fr"))
    events = feed(session, chunk_s=0.1, audio=np.concatenate([tone(2.0), quiet(1.0)]))
    assert {r.job.options.languages for r in of(DecodeRequested, events)} == {("en", "fr")}
    assert len({r.purpose for r in of(DecodeRequested, events)}) == 2  # partials and the (speculative) final


def test_abandoned_requests_a_partial_is_forgotten_a_final_is_delivered_empty():
    session = make()
    events = feed(session, chunk_s=0.1, audio=tone(2.0)) + session.finalize()
    partial = next(r for r in of(DecodeRequested, events) if not r.awaits_final)
    (final,) = finals_asked(events)
    assert session.abandon(partial) == []
    out = session.abandon(final)
    assert [type(e) for e in out] == [DecodeError, Final] and out[1].text == ""
    assert session.abandon(final) == []  # answered already


def test_the_end_says_when_it_was_decided_and_the_final_how_long_that_took_and_its_decode():
    session = make(interim_results=False, endpointing_ms=500)
    events = session.receive_audio(pcm(tone(1.0)))
    for _ in range(8):  # silence in 100 ms chunks: the end is decided at the end of the chunk that completes it
        events += session.receive_audio(pcm(quiet(0.1)))
    (ended,) = [e for e in events if isinstance(e, SpeechEnded)]
    assert ended.end == pytest.approx(1.0, abs=0.06)
    assert ended.decided == pytest.approx(1.6, abs=0.001)  # 500 ms of silence in 30 ms frames: the 6th chunk
    (req,) = requests(events, final=True)
    stamps = DecodeTiming(10.0, 10.5, 10.8)
    (final,) = session.receive_decode_result(req, result_for(req.job, "hi", timing=stamps))
    assert isinstance(final, Final) and final.decode == stamps  # the engine's stamps, carried unchanged
    assert final.endpointing_s == pytest.approx(ended.decided - ended.end)
