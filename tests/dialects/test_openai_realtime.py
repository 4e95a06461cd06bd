"""OpenAI Realtime transcription dialect, sans-I/O: handshake, GA and beta session updates, append/commit/clear,
and the item events (speech_started/stopped, committed, append-only deltas, completed, failed, error)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from stream_server.errors import IdleTimeout, InvalidParameter, ProtocolError
from stream_server.session.events import DecodeError, Partial, SpeechEnded, SpeechStarted
from stream_server.transport.dialects.base import (
    AudioIn,
    ClearIn,
    ClientCommand,
    FinalizeIn,
    Message,
    ReplyOut,
    SessionInfo,
    StartIn,
)
from stream_server.transport.dialects.openai_realtime import OpenAIRealtimeDialect, _extend

from .builders import final, handshake

TRANSCRIPTION = {"intent": "transcription"}


def connect(headers: dict[str, str] | None = None) -> tuple[OpenAIRealtimeDialect, list[Message]]:
    dialect = OpenAIRealtimeDialect()
    accepted = dialect.accept(handshake(TRANSCRIPTION, headers or {"Authorization": "Bearer sk-1"}))
    return dialect, dialect.started(SessionInfo("0123456789abcdef", "tiny.en", accepted.params))


def send(dialect: OpenAIRealtimeDialect, event: dict[str, Any]) -> list[ClientCommand]:
    return dialect.on_text(json.dumps(event))


def replies(commands: list[ClientCommand]) -> list[Message]:
    return [m for c in commands if isinstance(c, ReplyOut) for m in c.messages]


def ga_update(**audio_input: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}


def test_handshake_needs_the_transcription_intent_and_takes_bearer_or_subprotocol_keys() -> None:
    with pytest.raises(InvalidParameter):
        OpenAIRealtimeDialect().accept(handshake({}))
    accepted = OpenAIRealtimeDialect().accept(handshake(TRANSCRIPTION, {"Authorization": "Bearer sk-1"}))
    assert accepted.api_key == "sk-1" and accepted.params.sample_rate == 24000 and accepted.params.endpointing_ms == 500
    browser = ["realtime", "openai-insecure-api-key.sk-2", "openai-beta.realtime-v1"]
    accepted = OpenAIRealtimeDialect().accept(handshake(TRANSCRIPTION, {}, browser))
    assert (accepted.api_key, accepted.subprotocol) == ("sk-2", "realtime")


def test_session_created_once_then_ga_update_restarts_only_on_a_change() -> None:
    dialect, created = connect()
    assert created[0]["type"] == "session.created" and created[0]["session"]["type"] == "transcription"
    update = ga_update(
        format={"type": "audio/pcmu"},
        transcription={"model": "gpt-4o-mini-transcribe", "language": "en-US", "prompt": "Ray"},
        turn_detection={"type": "server_vad", "silence_duration_ms": 700, "threshold": 0.5},
        noise_reduction={"type": "near_field"},
    )
    start, reply = send(dialect, update)
    assert isinstance(start, StartIn)
    assert (start.params.encoding, start.params.sample_rate, start.params.endpointing_ms) == ("mulaw", 8000, 700)
    assert start.params.prompt == "Ray" and start.params.language == "en"
    (updated,) = replies([reply])
    session = updated["session"]
    assert updated["type"] == "session.updated" and session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700
    again = send(dialect, update)
    assert len(again) == 1 and isinstance(again[0], ReplyOut)  # nothing changed: no restart
    assert dialect.started(SessionInfo("0123456789abcdef", "tiny.en", start.params)) == []


def test_beta_update_and_commit_only_mode() -> None:
    dialect, created = connect({"Authorization": "Bearer k", "OpenAI-Beta": "realtime=v1"})
    assert created[0]["type"] == "transcription_session.created"
    update = {"type": "transcription_session.update",
              "session": {"input_audio_format": "g711_alaw", "turn_detection": None}}  # fmt: skip
    start, reply = send(dialect, update)
    assert isinstance(start, StartIn) and start.params.encoding == "alaw" and start.params.endpointing_ms is None
    (updated,) = replies([reply])
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_alaw" and updated["session"]["turn_detection"] is None


def test_audio_clear_and_bad_events() -> None:
    dialect, _ = connect()
    pcm = b"\x01\x00\x02\x00"
    assert send(dialect, {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}) == [
        AudioIn(pcm)
    ]
    clear, reply = send(dialect, {"type": "input_audio_buffer.clear"})
    assert clear == ClearIn() and replies([reply])[0]["type"] == "input_audio_buffer.cleared"
    bad = [
        "{nope",
        "[]",
        json.dumps({"type": "input_audio_buffer.append", "audio": "***"}),
        json.dumps({"type": "input_audio_buffer.append"}),
        json.dumps({"type": "response.create"}),
        json.dumps(ga_update(format={"type": "audio/mp3"})),
        json.dumps(ga_update(turn_detection={"type": "magic"})),
        json.dumps({"type": "session.update", "session": {"type": "realtime"}}),
    ]
    for text in bad:
        with pytest.raises(ProtocolError):
            dialect.on_text(text)
    with pytest.raises(ProtocolError):
        dialect.on_binary(b"\x00")


def test_error_carries_the_client_event_id_and_an_idle_close_is_quiet() -> None:
    dialect, _ = connect()
    with pytest.raises(ProtocolError) as info:
        send(dialect, {"type": "bogus", "event_id": "evt_7"})
    (error,) = dialect.error(info.value)
    assert error["type"] == "error" and error["error"]["event_id"] == "evt_7"
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == "protocol_error"
    assert dialect.error(IdleTimeout("idle")) == [] and dialect.closed("idle_timeout", 3.0) == []


def deltas_and_completed(messages: list[Message]) -> tuple[str, list[str]]:
    joined = "".join(m["delta"] for m in messages if m["type"].endswith("transcription.delta"))
    done = [m["transcript"] for m in messages if m["type"].endswith("transcription.completed")]
    return joined, done


def test_server_vad_items_in_order_with_append_only_deltas() -> None:
    dialect, _ = connect()
    out: list[Message] = []
    out += dialect.render(SpeechStarted(0, 0, 0.3))
    out += dialect.render(Partial(0, 0, 0.3, 1.0, "Hello there", ""))
    out += dialect.render(Partial(0, 0, 0.3, 1.5, "Hello there my fiend", "Hello there"))
    out += dialect.render(Partial(0, 0, 0.3, 2.0, "Hello there my friend", "Hello there my"))
    out += dialect.render(SpeechEnded(0, 0, 2.1, "endpoint"))
    out += dialect.render(SpeechStarted(0, 1, 2.9))  # the next utterance starts before the first final
    out += dialect.render(final("Hello there, my friend.", utterance_id=0, start=0.3, end=2.1))
    out += dialect.render(final("Second one.", utterance_id=1, start=2.9, end=3.6))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in out]
    assert kinds == ["speech_started", "delta", "delta", "speech_stopped", "committed", "speech_started",
                     "delta", "completed", "committed", "delta", "completed"]  # fmt: skip
    first, second = out[0]["item_id"], out[5]["item_id"]
    assert first != second and out[0]["audio_start_ms"] == 300 and out[3]["audio_end_ms"] == 2100
    assert out[8]["previous_item_id"] == first
    per_item = {item: [m for m in out if m.get("item_id") == item] for item in (first, second)}
    joined, (transcript,) = deltas_and_completed(per_item[first])
    assert joined == transcript == "Hello there, my friend."  # the last stable word was held back
    joined, (transcript,) = deltas_and_completed(per_item[second])
    assert joined == transcript == "Second one."
    assert out[7]["usage"] == {"type": "duration", "seconds": 1.8}


def test_commit_only_joins_length_cuts_and_answers_an_empty_commit() -> None:
    dialect, _ = connect()
    send(dialect, ga_update(turn_detection=None))
    finalize, reply = send(dialect, {"type": "input_audio_buffer.commit"})
    assert finalize == FinalizeIn(None)
    committed, completed = replies([reply])
    assert committed["type"] == "input_audio_buffer.committed" and completed["transcript"] == ""
    out: list[Message] = []
    out += dialect.render(SpeechStarted(0, 0, 0.0))
    out += dialect.render(SpeechEnded(0, 0, 20.0, "max_length"))
    out += dialect.render(SpeechStarted(0, 1, 20.0))
    out += dialect.render(final("first part", utterance_id=0, start=0.0, end=20.0, reason="max_length"))
    assert send(dialect, {"type": "input_audio_buffer.commit"}) == [FinalizeIn(None)]
    out += dialect.render(SpeechEnded(0, 1, 24.0, "finalize"))
    out += dialect.render(final("and the rest.", utterance_id=1, start=20.0, end=24.0, reason="finalize"))
    assert not [m for m in out if "speech_" in m["type"]]  # no VAD events without turn detection
    joined, completed_texts = deltas_and_completed(out)
    assert completed_texts == ["first part and the rest."] == [joined]
    assert len({m["item_id"] for m in out}) == 1


def test_a_final_that_rewrites_sent_words_keeps_them() -> None:
    dialect, _ = connect()
    out = dialect.render(SpeechStarted(0, 0, 0.0))
    out += dialect.render(Partial(0, 0, 0.0, 2.0, "the cat sat on a mat", "the cat sat on"))  # sends "the cat sat"
    out += dialect.render(final("The bat sat on the mat.", start=0.0, end=2.0))
    joined, (transcript,) = deltas_and_completed(out)
    assert joined == transcript == "the cat sat on the mat."


def test_a_failed_decode_says_failed_once() -> None:
    dialect, _ = connect()
    dialect.render(SpeechStarted(0, 0, 0.1))
    failed = dialect.render(DecodeError(0, 0, "model crashed"))
    assert [m["type"] for m in failed][-1] == "conversation.item.input_audio_transcription.failed"
    assert failed[-1]["error"]["code"] == "decode_failed"
    assert dialect.render(final("", utterance_id=0)) == []


@pytest.mark.parametrize(
    ("sent", "final_text", "expected"),
    [("Hello", "Hello world.", "Hello world."),
     ("hello world", "Hello, world. How are you?", "hello world How are you?"),
     ("Hello there", "Goodbye", "Hello there"), ("", "Fresh.", "Fresh.")],
)  # fmt: skip
def test_completed_always_extends_the_deltas(sent: str, final_text: str, expected: str) -> None:
    result = _extend(sent, final_text)
    assert result == expected and result.startswith(sent)
