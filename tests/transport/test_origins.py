"""Finding 12 of the hardening review: any page could open a session on a keyless server from a visitor's
browser. Browser origins are now checked (``--allowed-origins``), for websockets and for CORS; and finding 8:
``--max-sessions`` counts streams (channels), not connections."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from stream_server.transport.origins import OriginPolicy

from .test_native import refusal, until_closed


def opens(client: TestClient, url: str, origin: str | None) -> bool:
    headers = {"origin": origin} if origin else {}
    with client.websocket_connect(url, headers=headers) as ws:
        first = ws.receive_json()
        if first["type"] == "error":
            assert first["code"] == "origin_not_allowed" and "--allowed-origins" in first["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1008
            return False
        ws.send_json({"type": "close_stream"})
        until_closed(ws)
        return True


def test_by_default_the_own_origin_localhost_and_non_browsers_are_allowed(client: TestClient) -> None:
    assert opens(client, "/v1/listen", None)  # no Origin: not a browser
    assert opens(client, "/v1/listen", "http://testserver")  # the server's own origin (Host: testserver)
    assert opens(client, "/v1/listen", "http://localhost:3000")
    assert opens(client, "/v1/listen", "http://127.0.0.1:8080")
    assert not opens(client, "/v1/listen", "https://evil.example")
    assert not opens(client, "/v1/listen", "http://testserver.evil.example")


def test_listed_origins_and_star(make_client: Any) -> None:
    listed, _ = make_client(allowed_origins="https://captions.example.com/")
    assert opens(listed, "/v1/listen", "https://captions.example.com")
    assert not opens(listed, "/v1/listen", "https://evil.example")
    anyone, _ = make_client(allowed_origins="*")
    assert opens(anyone, "/v1/listen", "https://evil.example")


def test_a_refused_origin_is_an_http_403_where_the_dialect_refuses_before_the_upgrade(client: TestClient) -> None:
    evil = {"origin": "https://evil.example"}
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/deepgram/v1/listen", headers=evil),
    ):
        pass
    assert denied.value.status_code == 403
    response = client.get("/v1/models", headers={"origin": "https://evil.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_cors_answers_allowed_origins_only(make_client: Any) -> None:
    client, _ = make_client(allowed_origins="https://captions.example.com")
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    route = "/v1/audio/transcriptions"
    allowed = client.options(route, headers={"origin": "https://captions.example.com", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://captions.example.com"
    local = client.options(route, headers={"origin": "http://localhost:5173", **preflight})
    assert local.headers["access-control-allow-origin"] == "http://localhost:5173"
    refused = client.options(route, headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers


def test_the_policy_alone() -> None:
    policy = OriginPolicy("")
    assert policy.allows(None, "asr.example.com")
    assert policy.allows("https://asr.example.com", "asr.example.com")
    assert not policy.allows("https://asr.example.com.evil.example", "asr.example.com")
    assert not policy.allows("null", "asr.example.com")  # a sandboxed iframe or a file:// page


def test_max_sessions_counts_channels(make_client: Any) -> None:
    client, _ = make_client(max_sessions=4)
    with client.websocket_connect("/v1/listen?channels=4") as ws:
        assert ws.receive_json()["type"] == "session.started"
        message, code = refusal(client, "/v1/listen")  # a fifth stream
        assert message["code"] == "too_many_sessions" and "needs 1" in message["message"] and code == 1013
        ws.send_json({"type": "close_stream"})
        until_closed(ws)
    with client.websocket_connect("/v1/listen?channels=2") as ws:  # four streams free again
        assert ws.receive_json()["type"] == "session.started"
        message, _ = refusal(client, "/v1/listen?channels=3")
        assert message["code"] == "too_many_sessions"
        ws.send_json({"type": "close_stream"})
        until_closed(ws)
