"""Deepgram dialect, sans-I/O: handshake mapping, auth, messages in, Results/SpeechStarted/UtteranceEnd/Metadata
out. Strings and dicts only; the SDK end-to-end tests are in test_deepgram_e2e.py."""

from __future__ import annotations

import hashlib
import json

import pytest

from stream_server.decode.types import Word
from stream_server.errors import AudioFormatError, InvalidParameter, ProtocolError
from stream_server.session.events import Partial, SpeechEnded, SpeechStarted
from stream_server.transport.dialects.base import (
    AudioIn,
    CloseIn,
    FinalizeIn,
    KeepAliveIn,
    ReplyOut,
    SessionInfo,
)
from stream_server.transport.dialects.deepgram import ENDPOINTING_FLOOR_MS, DeepgramDialect, estimated_words

from .builders import final, handshake


def open_dialect(query: dict[str, object] | None = None, **kw: object) -> DeepgramDialect:
    dialect = DeepgramDialect(clock=lambda: 1_800_000_000.0)
    accepted = dialect.accept(handshake(query, **kw))  # type: ignore[arg-type]
    dialect.started(SessionInfo("abc123", "tiny.en", accepted.params))
    return dialect


def test_livekit_default_query_maps_and_ignores_the_rest() -> None:
    query = dict(
        model="nova-3", punctuate="true", smart_format="false", no_delay="true", interim_results="true",
        encoding="linear16", vad_events="true", sample_rate="16000", channels="1", endpointing="25",
        filler_words="true", profanity_filter="false", numerals="false", mip_opt_out="false", language="en-US",
    )  # fmt: skip
    accepted = DeepgramDialect().accept(handshake(query, {"Authorization": "Token KEY123"}))
    p = accepted.params
    assert (p.encoding, p.sample_rate, p.channels, p.mixdown) == ("pcm_s16le", 16000, 1, False)
    assert p.interim_results and p.word_timestamps and p.language == "en"
    assert p.endpointing_ms == ENDPOINTING_FLOOR_MS  # 25 ms clamped to the floor
    assert accepted.api_key == "KEY123" and accepted.subprotocol is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ENDPOINTING_FLOOR_MS), ("false", None), ("800", 800), ("10", ENDPOINTING_FLOOR_MS), ("99999", 10000)],
)
def test_endpointing(value: str | None, expected: int | None) -> None:
    query = {} if value is None else {"endpointing": value}
    assert DeepgramDialect().accept(handshake(query)).params.endpointing_ms == expected


def test_defaults_follow_deepgram() -> None:
    p = DeepgramDialect().accept(handshake({})).params
    assert p.encoding == "auto"  # containerized audio when encoding is absent
    assert p.interim_results is False  # Deepgram's default, not the server's


@pytest.mark.parametrize(
    ("encoding", "codec", "rate"),
    [("linear16", "pcm_s16le", 16000), ("linear32", "pcm_f32le", 16000), ("mulaw", "mulaw", 8000),
     ("alaw", "alaw", 8000), ("opus", "ogg", 16000), ("ogg-opus", "auto", 16000)],
)  # fmt: skip
def test_encodings(encoding: str, codec: str, rate: int) -> None:
    p = DeepgramDialect().accept(handshake({"encoding": encoding})).params
    assert (p.encoding, p.sample_rate) == (codec, rate)


@pytest.mark.parametrize(
    "query",
    [{"encoding": "g729"}, {"sample_rate": "4000"}, {"channels": "0"}, {"channels": "x"},
     {"interim_results": "maybe"}, {"language": "english!"}, {"language": "de"}, {"endpointing": "soon"}],
)  # fmt: skip
def test_bad_parameters_are_refused_at_the_handshake(query: dict[str, str]) -> None:
    with pytest.raises(InvalidParameter) as info:
        DeepgramDialect().accept(handshake(query))
    assert info.value.http_status == 400 and DeepgramDialect.refuse_with_http


def test_multilingual_language_and_keyterms() -> None:
    query = {"language": "pt-BR", "keyterm": ["Kubernetes", "Deepgram"], "keywords": ["Ray:2"]}
    p = DeepgramDialect().accept(handshake(query, multilingual=True)).params
    assert p.language == "pt"
    assert p.prompt == "Glossary: Kubernetes, Deepgram, Ray."
    assert DeepgramDialect().accept(handshake({"language": "multi"}, multilingual=True)).params.language == "en"


def test_channels_mixdown_and_multichannel() -> None:
    mixed = open_dialect({"encoding": "linear16", "channels": "2"})
    assert mixed.render(final("hi", channel=0))[0]["channel_index"] == [0, 1]
    multi = open_dialect({"encoding": "linear16", "channels": "2", "multichannel": "true"})
    assert multi.render(final("hi", channel=1))[0]["channel_index"] == [1, 2]


@pytest.mark.parametrize(
    ("headers", "protocols", "key", "echo"),
    [({"Authorization": "Token K1"}, [], "K1", None), ({"Authorization": "bearer K2"}, [], "K2", None),
     ({}, ["token", "K3"], "K3", "token"), ({}, ["bearer", "K4"], "K4", "bearer"), ({}, [], None, None)],
)  # fmt: skip
def test_auth(headers: dict[str, str], protocols: list[str], key: str | None, echo: str | None) -> None:
    accepted = DeepgramDialect().accept(handshake({}, headers, protocols))
    assert (accepted.api_key, accepted.subprotocol) == (key, echo)


def test_client_messages() -> None:
    d = open_dialect({"encoding": "linear16"})
    assert d.on_binary(b"\x00\x01") == [AudioIn(b"\x00\x01")]
    assert d.on_text('{"type":"KeepAlive"}') == [KeepAliveIn()]
    assert d.on_text('{"type":"CloseStream"}') == [CloseIn()]
    (reply,) = d.on_text('{"type":"Configure","keyterms":["x"]}')
    assert isinstance(reply, ReplyOut) and reply.messages[0]["type"] == "ConfigureFailure"
    for bad in ("{not json", "[1]", '{"type":"Nope"}', '{"type":"Finalize","channel":3}'):
        with pytest.raises(ProtocolError):
            d.on_text(bad)


def test_finalize_with_nothing_open_gets_an_empty_from_finalize_result() -> None:
    d = open_dialect({"encoding": "linear16"})
    finalize, reply = d.on_text('{"type":"Finalize"}')
    assert finalize == FinalizeIn(None) and isinstance(reply, ReplyOut)
    (empty,) = reply.messages
    assert empty["is_final"] and empty["from_finalize"] and not empty["speech_final"]
    assert empty["channel"]["alternatives"][0]["transcript"] == ""


def test_finalize_with_an_open_utterance_is_answered_by_its_final() -> None:
    d = open_dialect(
        {"encoding": "linear16", "vad_events": "true", "interim_results": "true", "utterance_end_ms": "1000"}
    )
    assert d.render(SpeechStarted(0, 0, 0.42)) == [{"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.42}]
    (interim,) = d.render(Partial(0, 0, 0.42, 1.0, "hello", "hello"))
    assert interim["is_final"] is False and interim["channel"]["alternatives"][0]["transcript"] == "hello"
    assert d.on_text('{"type":"Finalize"}') == [FinalizeIn(None)]
    d.render(SpeechEnded(0, 0, 1.2, "finalize"))
    words = (Word(" Hello", 0.5, 0.8, 0.9), Word(" world.", 0.8, 1.2, 0.7))
    result, utterance_end = d.render(final("Hello world.", reason="finalize", words=words))
    assert result["from_finalize"] and result["is_final"] and not result["speech_final"]
    alt = result["channel"]["alternatives"][0]
    assert alt["transcript"] == "Hello world." and alt["confidence"] == pytest.approx(0.8)
    assert alt["words"][1] == {
        "word": "world",
        "start": 0.8,
        "end": 1.2,
        "confidence": 0.7,
        "punctuated_word": "world.",
    }
    assert set(result["metadata"]) == {"request_id", "model_info", "model_uuid"}
    assert result["metadata"]["model_info"]["name"] == "tiny.en"
    assert utterance_end == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.2}


def test_endpointed_final_is_speech_final_and_partials_need_interim_results() -> None:
    d = open_dialect({"encoding": "linear16"})
    assert d.render(SpeechStarted(0, 0, 0.1)) == []  # vad_events off
    assert d.render(Partial(0, 0, 0.1, 0.5, "hi", "")) == []  # interim_results off by default
    (result,) = d.render(final("Hi there."))
    assert result["speech_final"] and not result["from_finalize"]
    assert (result["start"], result["duration"]) == (0.5, 1.0)
    (cut,) = d.render(final("and more", utterance_id=1, reason="max_length"))
    assert cut["is_final"] and not cut["speech_final"]


def test_metadata_at_close_and_errors() -> None:
    d = open_dialect({"encoding": "linear16"})
    d.on_binary(b"abc")
    d.on_binary(b"def")
    (meta,) = d.closed("closed_by_client", 3.25)
    assert meta["type"] == "Metadata" and meta["duration"] == 3.25 and meta["channels"] == 1
    assert meta["sha256"] == hashlib.sha256(b"abcdef").hexdigest()
    assert meta["created"].startswith("2027-01-15T08:00:00.000") and meta["created"].endswith("Z")
    (err,) = d.error(AudioFormatError("bad bytes"))
    assert err == {"type": "Error", "variant": "InvalidAudio", "description": "bad bytes", "message": ""}
    json.dumps([meta, err])


def test_a_finalize_racing_an_endpoint_still_gets_its_answer() -> None:
    d = open_dialect({"encoding": "linear16"})
    d.render(SpeechStarted(0, 0, 0.2))
    assert d.on_text('{"type":"Finalize"}') == [FinalizeIn(None)]  # open as far as the dialect knows
    result, answer = d.render(final("Done.", reason="endpoint"))  # the endpoint had ended it first
    assert result["speech_final"] and not result["from_finalize"]
    assert answer["from_finalize"] and answer["channel"]["alternatives"][0]["transcript"] == ""


def test_estimated_word_times_share_the_final_span_by_length() -> None:
    words = estimated_words(" Hi there, Bob.", 2.0, 3.2)
    assert [w.word for w in words] == ["Hi", "there,", "Bob."]
    assert words[0].start == 2.0 and words[-1].end == pytest.approx(3.2)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(words, words[1:]))  # contiguous
    assert words[1].end - words[1].start == pytest.approx(1.2 * 6 / 12)  # "there," is 6 of 12 characters
    assert estimated_words("", 1.0, 2.0) == () and estimated_words("   ", 1.0, 2.0) == ()


def test_estimated_words_are_asked_for_no_alignment_and_still_returned() -> None:
    d = DeepgramDialect(aligned_words=False)
    assert d.accept(handshake({})).params.word_timestamps is False
    assert DeepgramDialect().accept(handshake({})).params.word_timestamps is True  # aligned by default
    (result,) = d.render(final("Hello world.", start=0.5, end=1.5))  # no words from the decoder
    alt = result["channel"]["alternatives"][0]
    assert [w["punctuated_word"] for w in alt["words"]] == ["Hello", "world."]
    assert [w["word"] for w in alt["words"]] == ["hello", "world"]
    assert alt["words"][0]["start"] == 0.5 and alt["words"][-1]["end"] == 1.5
