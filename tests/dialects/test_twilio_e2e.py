"""A replay of Twilio's Media Streams message sequence (two tracks of mu-law call audio, signed with the twilio
package's validator) against the real server; the finals arrive on /v1/calls/{callSid}/events and the webhook."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets

from ..conftest import ServerHandle, free_port
from ..helpers import silence, wer
from .e2e import API_KEY, TWILIO_TOKEN, mulaw_8k, references, sentences_16k

request_validator = pytest.importorskip("twilio.request_validator", reason="twilio is in the dialects-test extra")

CALL = "CA0123456789abcdef0123456789abcdef"
PATH = "/v1/twilio/media"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/hook", received
    server.shutdown()


def signature(server: ServerHandle, token: str = TWILIO_TOKEN) -> str:
    return request_validator.RequestValidator(token).compute_signature(f"ws://127.0.0.1:{server.port}{PATH}", {})


def messages(inbound: bytes, outbound: bytes, callback_url: str) -> list[dict[str, Any]]:
    """Twilio's documented sequence: connected, start, 20 ms media per track alternating, stop."""
    start = {"streamSid": "MZ1", "accountSid": "AC1", "callSid": CALL, "tracks": ["inbound", "outbound"],
             "customParameters": {"api_key": API_KEY, "callback_url": callback_url, "language": "en-US"},
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    out: list[dict[str, Any]] = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": start},
    ]
    for chunk, i in enumerate(range(0, max(len(inbound), len(outbound)), 160)):
        for track, audio in (("inbound", inbound), ("outbound", outbound)):
            if i < len(audio):
                payload = base64.b64encode(audio[i : i + 160]).decode()
                media = {"track": track, "chunk": str(chunk + 1), "timestamp": str(chunk * 20), "payload": payload}
                out.append({"event": "media", "sequenceNumber": str(len(out)), "streamSid": "MZ1", "media": media})
    out.append({"event": "stop", "sequenceNumber": str(len(out)), "streamSid": "MZ1",
                "stop": {"accountSid": "AC1", "callSid": CALL}})  # fmt: skip
    return out


def test_two_tracks_reach_subscribers_and_the_webhook(
    dialect_server: ServerHandle, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, posted = webhook
    first, second = sentences_16k()
    inbound = mulaw_8k(np.concatenate([silence(0.3), first, silence(1.0)]))
    outbound = mulaw_8k(np.concatenate([silence(1.0), second, silence(1.0)]))
    events: list[dict[str, Any]] = []

    async def scenario() -> None:
        subscribe = websockets.connect(
            f"{dialect_server.ws_url}/v1/calls/{CALL}/events", additional_headers={"Authorization": f"Bearer {API_KEY}"}
        )
        async with subscribe as subscriber:
            stream = websockets.connect(
                f"{dialect_server.ws_url}{PATH}", additional_headers={"X-Twilio-Signature": signature(dialect_server)}
            )
            async with stream as twilio:
                for i, message in enumerate(messages(inbound, outbound, url)):
                    await twilio.send(json.dumps(message))
                    if i % 50 == 0:
                        await asyncio.sleep(0.05)  # about 10x real time
                async for raw in subscriber:
                    events.append(json.loads(raw))

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert events[0]["type"] == "call.started" and events[-1]["type"] == "call.ended"
    assert all(e["call_sid"] == CALL for e in events)
    finals = [e for e in events if e["type"] == "final" and e["text"]]
    by_track = {track: " ".join(f["text"] for f in finals if f["track"] == track) for track in ("inbound", "outbound")}
    for track, reference in zip(("inbound", "outbound"), references()):
        assert wer(reference, by_track[track]) < 0.35, by_track
    assert {f["channel"] for f in finals} == {0, 1}
    deadline = time.monotonic() + 10  # webhooks are fire and forget: let them land
    while len(posted) < len(finals) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(p["text"] for p in posted) == sorted(f["text"] for f in finals)


def test_a_bad_signature_is_refused_at_the_handshake(dialect_server: ServerHandle) -> None:
    async def attempt(headers: dict[str, str]) -> None:
        async with websockets.connect(f"{dialect_server.ws_url}{PATH}", additional_headers=headers):
            pass

    for headers in ({}, {"X-Twilio-Signature": signature(dialect_server, "not-the-token")}):
        with pytest.raises(websockets.InvalidStatus) as info:
            asyncio.run(attempt(headers))
        assert info.value.response.status_code == 401
