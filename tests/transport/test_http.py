"""HTTP routes in-process on the fake backend: ops routes, keys, OpenAI-shaped errors, model aliases, uploads."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from ..helpers import SAMPLE_RATE, silence, synthesize

KEY = {"Authorization": "Bearer k1"}


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    try:
        audio = synthesize("hello there this is a test")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate([audio, silence(0.5)]), SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


def openai_error(response: Any, status: int, code: str, param: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] in ("invalid_request_error", "authentication_error", "server_error")
    return str(error["message"])


def test_ops_routes_answer(client: TestClient) -> None:
    assert client.get("/healthz").text == "ok"
    assert client.get("/readyz").json() == {"ready": True, "model": "fake-model"}
    status = client.get("/v1/status").json()
    assert {"model", "sessions", "backlog_seconds", "queued_events", "scheduler", "engine_busy"} <= set(status)
    assert status["sessions"] == 0 and status["engine_busy"] is False
    assert "stream_active_sessions" in client.get("/metrics").text


def test_with_keys_every_route_but_healthz_needs_one(make_client: Any) -> None:
    client, _ = make_client(api_keys=["k1"])
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/metrics", "/v1/status", "/v1/models"):
        response = client.get(path)
        assert openai_error(response, 401, "invalid_api_key", None).startswith("missing API key")
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/models", headers=KEY).status_code == 200
    assert client.get("/openapi.json").status_code == 404  # no open docs beside keyed routes
    metrics = client.get("/metrics", headers=KEY).text
    assert 'errors_total{code="invalid_api_key",transport="http"} 4.0' in metrics


def test_openai_model_names_are_served(client: TestClient) -> None:
    listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert listed == ["fake-model", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
    for name in ("gpt-4o-transcribe", "gpt-4o-transcribe-latest", "fake-model"):
        assert client.get(f"/v1/models/{name}").json()["id"] == name
    openai_error(client.get("/v1/models/tts-1"), 404, "model_not_found", "model")


def test_an_upload_is_transcribed_under_any_openai_model_name(client: TestClient, speech_wav: bytes) -> None:
    for model in ("whisper-1", "gpt-4o-mini-transcribe", "fake-model"):
        response = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_wav, "audio/wav")},
            data={"model": model, "language": "EN"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["text"] == "hello world"
    message = openai_error(
        client.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav)}, data={"model": "tts-1"}),
        404,
        "model_not_found",
        "model",
    )
    assert "whisper-1" in message


def test_bad_uploads_get_openai_shaped_400s(client: TestClient, speech_wav: bytes) -> None:
    openai_error(client.post("/v1/audio/transcriptions", content=b"x"), 400, "invalid_parameter", "file")
    bad_language = client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav)}, data={"language": "klingon"}
    )
    assert "Unsupported language 'klingon'" in openai_error(bad_language, 400, "invalid_parameter", "language")
    french = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav)}, data={"language": "fr"})
    assert "English-only" in openai_error(french, 400, "invalid_parameter", "language")
    metrics = client.get("/metrics").text
    assert 'errors_total{code="invalid_parameter",transport="http"} 3.0' in metrics


def test_an_oversized_upload_is_refused_with_413(make_client: Any, speech_wav: bytes) -> None:
    client, _ = make_client(max_upload_bytes=1000)
    response = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav)})
    openai_error(response, 413, "limit_exceeded", "file")


def test_a_very_long_file_name_gets_an_explained_400(client: TestClient, speech_wav: bytes) -> None:
    for length in (2000, 10_000):
        response = client.post("/v1/audio/transcriptions", files={"file": ("a" * length + ".wav", speech_wav)})
        message = openai_error(response, 400, "invalid_parameter", "file")
        assert "file name is limited to 1024 characters" in message or f"{length + 4} characters long" in message
