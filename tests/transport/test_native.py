"""Protocol v1 on ``/v1/listen`` in-process (fake backend): handshake, messages, errors, close."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from stream_server.app import create_app
from stream_server.codecs import ENCODINGS
from stream_server.config import Settings
from stream_server.decode.fake import FakeBackend as EchoBackend

CHUNK = 3200  # 100 ms of 16 kHz s16le


def receive_until(ws: WebSocketTestSession, kind: str, limit: int = 200) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for _ in range(limit):
        message = ws.receive_json()
        seen.append(message)
        if message["type"] == kind:
            return seen
    raise AssertionError(f"no {kind} in {seen}")


def until_closed(ws: WebSocketTestSession, limit: int = 200) -> tuple[list[dict[str, Any]], int]:
    """Every message up to the server's close frame, and its code (a test leaves only once the server is done)."""
    seen: list[dict[str, Any]] = []
    for _ in range(limit):
        try:
            seen.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            return seen, closed.code
    raise AssertionError(f"no close after {seen}")


def refusal(client: TestClient, url: str, **kwargs: Any) -> tuple[dict[str, Any], int]:
    with client.websocket_connect(url, **kwargs) as ws:
        message = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return message, closed.value.code


def test_a_stream_gets_started_final_and_closed_in_order(client: TestClient, speech_pcm: bytes) -> None:
    with client.websocket_connect("/v1/listen?interim_results=false") as ws:
        started = ws.receive_json()
        assert started == {
            "type": "session.started",
            "session_id": started["session_id"],
            "model": "fake-model",
            "sample_rate": 16000,
            "channels": 1,
            "language": "en",
        }
        for i in range(0, len(speech_pcm), CHUNK):
            ws.send_bytes(speech_pcm[i : i + CHUNK])
        ws.send_json({"type": "close_stream"})
        messages, code = until_closed(ws)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert "partial" not in kinds
    assert kinds.index("speech.started") < kinds.index("final") < kinds.index("session.closed")
    final = next(m for m in messages if m["type"] == "final")
    assert final["text"] == "hello world" and final["channel"] == 0 and final["language"] == "en"
    assert messages[-1]["reason"] == "client_closed" and messages[-1]["audio_seconds"] > 2.0


def test_finalize_ends_the_utterance_and_the_stream_goes_on(client: TestClient, speech_pcm: bytes) -> None:
    with client.websocket_connect("/v1/listen?interim_results=false") as ws:
        ws.receive_json()
        speech_only = speech_pcm[: len(speech_pcm) - 32000]
        for i in range(0, len(speech_only), CHUNK):
            ws.send_bytes(speech_only[i : i + CHUNK])
        ws.send_json({"type": "finalize"})
        first = receive_until(ws, "final")[-1]
        ws.send_json({"type": "keepalive"})
        ws.send_bytes(speech_pcm[:CHUNK])
        ws.send_json({"type": "close_stream"})
        closed = until_closed(ws)[0][-1]
    assert first["utterance_id"] == 0 and closed["reason"] == "client_closed"


@pytest.mark.parametrize(
    ("query", "param", "text"),
    [
        ("bogus=1", "bogus", "unknown query parameter(s): bogus"),
        ("encoding=mp3", "encoding", "encoding must be " + " or ".join(ENCODINGS)),
        ("sample_rate=abc", "sample_rate", "sample_rate must be an integer, got 'abc'"),
        ("sample_rate=4000", "sample_rate", "sample_rate must be between 8000 and 48000"),
        ("channels=9", "channels", "channels must be between 1 and 8"),
        ("language=fr", "language", "the served model is English-only; language 'fr' needs a multilingual model"),
        ("task=translate", "task", "task=translate needs a multilingual model"),
        ("interim_results=maybe", "interim_results", "interim_results must be true or false, got 'maybe'"),
        ("endpointing_ms=50", "endpointing_ms", "endpointing_ms must be between 100 and 10000"),
        ("language=xx", "language", "the served model is English-only; language 'xx' needs a multilingual model"),
    ],
)
def test_a_bad_parameter_is_refused_with_error_then_1008(client: TestClient, query: str, param: str, text: str) -> None:
    message, code = refusal(client, f"/v1/listen?{query}")
    assert message == {"type": "error", "code": "invalid_parameter", "message": text}
    assert code == 1008


def test_bad_messages_get_errors_and_the_session_goes_on(client: TestClient) -> None:
    with client.websocket_connect("/v1/listen") as ws:
        ws.receive_json()
        ws.send_text("{not json")
        assert ws.receive_json()["message"].startswith("malformed JSON")
        ws.send_json({"type": "shout"})
        assert ws.receive_json() == {
            "type": "error",
            "code": "protocol_error",
            "message": "unknown message type 'shout'; expected finalize, close_stream, keepalive or configure",
        }
        ws.send_text("[" * 100000)
        assert ws.receive_json()["code"] == "message_too_large"
        ws.send_json({"type": "close_stream"})
        assert until_closed(ws)[0][-1]["reason"] == "client_closed"


def test_an_oversized_audio_message_is_dropped_and_said(make_client: Any) -> None:
    client, _ = make_client(max_message_bytes=1000)
    with client.websocket_connect("/v1/listen") as ws:
        ws.receive_json()
        ws.send_bytes(b"\0" * 1002)
        error = ws.receive_json()
        assert error == {
            "type": "error",
            "code": "message_too_large",
            "message": "a message of 1002 bytes exceeds the limit of 1000; it was dropped",
        }
        ws.send_bytes(b"\0" * 1000)
        ws.send_json({"type": "close_stream"})
        assert until_closed(ws)[0][-1]["audio_seconds"] == pytest.approx(500 / 16000, abs=1e-3)


def test_audio_after_close_stream_is_said_to_be_ignored_once(client: TestClient, speech_pcm: bytes) -> None:
    with client.websocket_connect("/v1/listen") as ws:
        ws.receive_json()
        ws.send_json({"type": "close_stream"})
        ws.send_bytes(b"\0" * 320)
        ws.send_bytes(b"\0" * 320)
        messages, _ = until_closed(ws)
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) <= 1  # the close may complete before the audio is read


def test_keys_are_checked_at_the_handshake(make_client: Any) -> None:
    client, _ = make_client(api_keys=["k1"])
    message, code = refusal(client, "/v1/listen")
    assert message["code"] == "invalid_api_key" and code == 1008
    message, code = refusal(client, "/v1/listen", headers={"Authorization": "Bearer nope"})
    assert message == {"type": "error", "code": "invalid_api_key", "message": "invalid API key"}
    with client.websocket_connect("/v1/listen", headers={"Authorization": "Bearer k1"}) as ws:
        assert ws.receive_json()["type"] == "session.started"
        ws.send_json({"type": "close_stream"})  # each session ends the way a client ends it
        until_closed(ws)
    with client.websocket_connect("/v1/listen", subprotocols=["bearer.k1"]) as ws:
        assert ws.accepted_subprotocol == "bearer.k1"
        assert ws.receive_json()["type"] == "session.started"
        ws.send_json({"type": "close_stream"})
        until_closed(ws)


def test_sessions_over_the_maximum_are_refused_with_1013(make_client: Any) -> None:
    client, _ = make_client(max_sessions=1)
    with client.websocket_connect("/v1/listen") as ws:
        ws.receive_json()
        message, code = refusal(client, "/v1/listen")
        assert message["code"] == "too_many_sessions" and code == 1013
        ws.send_json({"type": "close_stream"})  # leave the first session the way a client would
        assert until_closed(ws)[1] == 1000


def test_errors_are_counted_with_the_dialect_label(client: TestClient) -> None:
    refusal(client, "/v1/listen?bogus=1")
    metrics = client.get("/metrics").text
    assert 'errors_total{code="invalid_parameter",transport="native"} 1.0' in metrics


def test_language_is_read_like_the_http_api(client: TestClient) -> None:
    for language in ("EN", "english", "auto", ""):
        with client.websocket_connect(f"/v1/listen?language={language}") as ws:
            assert ws.receive_json()["language"] == "en"
            ws.send_json({"type": "close_stream"})
            assert until_closed(ws)[1] == 1000


@pytest.mark.parametrize("query", ["access_token=k", "access%5Ftoken=k", "%61ccess_token=k"])
def test_a_key_in_the_url_is_refused_however_encoded(client: TestClient, query: str) -> None:
    message, code = refusal(client, f"/v1/listen?{query}")
    assert message["code"] == "invalid_parameter" and "never accepted in the URL" in message["message"]
    assert code == 1008
    response = client.get(f"/v1/models?{query}")
    assert response.status_code == 400 and response.json()["error"]["param"] == "access_token"


@pytest.mark.parametrize("value", ["16_000", "١٦٠٠٠", "+16000", " 16000", "1e4"])
def test_numbers_are_ascii_digits_only(client: TestClient, value: str) -> None:
    message, _ = refusal(client, f"/v1/listen?sample_rate={quote(value)}")
    assert message["message"] == f"sample_rate must be an integer, got {value!r}"


def test_model_is_checked_like_the_http_api(client: TestClient) -> None:
    for model in ("fake-model", "whisper-1", "gpt-4o-mini-transcribe"):
        with client.websocket_connect(f"/v1/listen?model={model}") as ws:
            assert ws.receive_json()["type"] == "session.started"
            ws.send_json({"type": "close_stream"})
            until_closed(ws)
    message, _ = refusal(client, "/v1/listen?model=tts-1")
    assert message["code"] == "invalid_parameter" and "'tts-1' is not served here" in message["message"]


CJK_PROMPT = "中" * 2000  # 6,000 bytes of UTF-8, 18,000 percent-encoded: too long for any request line


@pytest.fixture
def echo_client() -> Iterator[TestClient]:
    """An app whose fake model answers each job with its user prompt (``decode.fake.length_text``)."""
    with TestClient(create_app(Settings(), EchoBackend(model_id="fake-model"))) as client:
        yield client


def test_a_configure_message_before_audio_sets_the_prompt(echo_client: TestClient, speech_pcm: bytes) -> None:
    """The fake model's text is the user's prompt: the final shows the prompt reached the decoder."""
    with echo_client.websocket_connect("/v1/listen?interim_results=false&prompt=short") as ws:
        ws.receive_json()
        ws.send_json({"type": "configure", "prompt": CJK_PROMPT})
        ws.send_bytes(speech_pcm)
        ws.send_json({"type": "close_stream"})
        messages, code = until_closed(ws)
    assert code == 1000
    assert [m["type"] for m in messages] == ["speech.started", "final", "session.closed"]  # one session.started
    assert messages[1]["text"] == CJK_PROMPT


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        ({"prompt": "中" * 2001}, "invalid_parameter", "prompt is longer than 2000 characters"),
        ({"prompt": 7}, "invalid_parameter", "prompt must be a string"),
        ({"prompt": "\ud800"}, "invalid_parameter", "prompt is not valid Unicode text"),
        ({"prompt": "x", "language": "fr"}, "invalid_parameter", "configure takes only prompt, not language"),
    ],
)
def test_a_bad_configure_is_refused_and_the_session_goes_on(
    echo_client: TestClient, speech_pcm: bytes, message: dict[str, Any], code: str, text: str
) -> None:
    with echo_client.websocket_connect("/v1/listen?interim_results=false&prompt=kept") as ws:
        ws.receive_json()
        ws.send_json({"type": "configure", **message})
        assert ws.receive_json() == {"type": "error", "code": code, "message": text}
        ws.send_bytes(speech_pcm)
        ws.send_json({"type": "close_stream"})
        messages, close_code = until_closed(ws)
    assert close_code == 1000 and [m["text"] for m in messages if m["type"] == "final"] == ["kept"]


def test_configure_after_audio_or_twice_is_a_protocol_error(echo_client: TestClient, speech_pcm: bytes) -> None:
    with echo_client.websocket_connect("/v1/listen?interim_results=false&prompt=first") as ws:
        ws.receive_json()
        ws.send_json({"type": "configure", "prompt": "second"})
        ws.send_json({"type": "configure", "prompt": "third"})
        assert ws.receive_json() == {
            "type": "error",
            "code": "protocol_error",
            "message": "configure was already sent; the session goes on as configured",
        }
        ws.send_bytes(speech_pcm[:CHUNK])
        ws.send_json({"type": "configure", "prompt": "fourth"})
        assert (
            ws.receive_json()["message"] == "configure must come before the first audio; the session goes on as it was"
        )
        ws.send_bytes(speech_pcm[CHUNK:])
        ws.send_json({"type": "close_stream"})
        messages, code = until_closed(ws)
    assert code == 1000 and [m["text"] for m in messages if m["type"] == "final"] == ["second"]


def intake_seconds(client: TestClient, pcm: bytes, query: str, chunk: int) -> tuple[float, float]:
    """Wall seconds from the first audio to ``session.closed``, and the audio seconds the session took."""
    with client.websocket_connect(f"/v1/listen?{query}") as ws:
        ws.receive_json()
        started = time.monotonic()
        for i in range(0, len(pcm), chunk):
            ws.send_bytes(pcm[i : i + chunk])
        ws.send_json({"type": "close_stream"})
        messages, _ = until_closed(ws, limit=2000)
    return time.monotonic() - started, messages[-1]["audio_seconds"]


def test_an_8_channel_48_khz_connection_is_paced_at_the_intake_speed(make_client: Any) -> None:
    """20 s of 8-channel 48 kHz audio sent at once: the first 10 s are taken at once, the rest at 10 x real time
    (at least 1 s more), and every second of it is taken."""
    pcm = bytes(20 * 48000 * 8 * 2)
    query, chunk = "sample_rate=48000&channels=8", 48000 * 8 * 2 // 4
    limited, _ = make_client(max_intake_speed=10)
    unlimited, _ = make_client(max_intake_speed=0)
    paced_s, paced_audio = intake_seconds(limited, pcm, query, chunk)
    free_s, free_audio = intake_seconds(unlimited, pcm, query, chunk)
    assert paced_audio == free_audio == pytest.approx(20.0, abs=0.01)
    print(f"8 ch 48 kHz, 20 s at once: {paced_s:.2f} s paced, {free_s:.2f} s unlimited")
    assert paced_s >= 0.95 and paced_s > free_s + 0.5, (paced_s, free_s)
