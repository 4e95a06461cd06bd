"""The session's API beyond one interleaved stream: per-channel feeds, clear, finalize of one channel, mixdown,
commit-only streams (no endpointing), why an utterance ended, and language changes."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.errors import ProtocolError
from stream_server.session.events import DecodeError, DecodeRequested, Final, SpeechEnded, SpeechStarted
from stream_server.session.utterance import IllegalTransition, Utterance, UtteranceState
from tests.session.support import RATE, make, pcm, quiet, result_for, tone


def of(kind, events):
    return [e for e in events if isinstance(e, kind)]


def finals_asked(events) -> list[DecodeRequested]:
    return [e for e in of(DecodeRequested, events) if e.awaits_final]


def feed(session, audio: np.ndarray, chunk_s: float = 0.1) -> list:
    """Stream ``audio`` in real-time-sized chunks, as a live client does."""
    data, step = pcm(audio), int(chunk_s * RATE) * 2
    return [e for i in range(0, len(data), step) for e in session.receive_audio(data[i : i + step])]


def answer(session, request: DecodeRequested, text: str, language: str = "en") -> list:
    return session.receive_decode_result(request, result_for(request.job, text, language=language))


def test_each_channel_can_be_fed_on_its_own_in_any_chunking():
    session = make(interim_results=False, channels=2)
    data = pcm(np.concatenate([tone(1.0), quiet(1.0)]))
    events = [e for i in range(0, len(data), 301) for e in session.receive_channel_audio(1, data[i : i + 301])]
    assert [(e.channel, e.utterance_id) for e in of(SpeechStarted, events)] == [(1, 0)]
    (request,) = finals_asked(events)
    assert request.channel == 1 and request.job.own_s == pytest.approx(1.0 + 0.3, abs=0.05)  # speech and tail
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
    events = feed(session, np.concatenate([tone(2.0), quiet(1.0)]))
    assert {r.job.options.languages for r in of(DecodeRequested, events)} == {("en", "fr")}
    assert len({r.purpose for r in of(DecodeRequested, events)}) == 2  # partials and the (speculative) final


def test_abandoned_requests_a_partial_is_forgotten_a_final_is_delivered_empty():
    session = make()
    events = feed(session, tone(2.0)) + session.finalize()
    partial = next(r for r in of(DecodeRequested, events) if not r.awaits_final)
    (final,) = finals_asked(events)
    assert session.abandon(partial) == []
    out = session.abandon(final)
    assert [type(e) for e in out] == [DecodeError, Final] and out[1].text == ""
    assert session.abandon(final) == []  # answered already


def test_an_illegal_utterance_transition_raises_a_named_error():
    utt = Utterance(0, 0, 0)
    with pytest.raises(IllegalTransition):
        utt.move(UtteranceState.DONE)
    utt.move(UtteranceState.ENDED)
    with pytest.raises(IllegalTransition):
        utt.move(UtteranceState.DISCARDED)
