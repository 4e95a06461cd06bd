"""Hostile input on every dialect endpoint: each gets an error in its own shape (Twilio's goes to the call's
subscribers) and its session goes on, an abrupt disconnect harms nobody, and a healthy session streaming beside
them all keeps its transcript."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import websockets

from ..conftest import ServerHandle
from ..helpers import silence, to_pcm16, wer
from .e2e import API_KEY, TWILIO_TOKEN, references, sentences_16k

DEEPGRAM = "/deepgram/v1/listen?encoding=linear16&sample_rate=16000"
REALTIME = "/v1/realtime?intent=transcription"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OVERSIZE = b"\x00" * (3 << 19)  # 1.5 MiB: over max_message_bytes (1 MiB), under the websocket layer's cut-off


async def recv_json(ws: Any, timeout: float = 30) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def deepgram_abuse(url: str) -> list[dict[str, Any]]:
    async with websockets.connect(f"{url}{DEEPGRAM}", additional_headers={"Authorization": f"Token {API_KEY}"},
                                  max_size=None) as ws:  # fmt: skip
        replies = []
        for bad in ("{oops", json.dumps({"type": "Explode"}), json.dumps([1, 2])):
            await ws.send(bad)
            replies.append(await recv_json(ws))
        await ws.send(OVERSIZE)
        replies.append(await recv_json(ws))
        await ws.send(json.dumps({"type": "Finalize"}))  # still alive: answered
        replies.append(await recv_json(ws))
        return replies


async def realtime_abuse(url: str) -> list[dict[str, Any]]:
    async with websockets.connect(f"{url}{REALTIME}", additional_headers=AUTH, max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        replies = []
        opus = {"type": "transcription", "audio": {"input": {"format": {"type": "audio/opus"}}}}
        bad_events = (
            "{oops",
            json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}),
            json.dumps({"type": "conversation.item.create"}),
            json.dumps({"type": "session.update", "session": opus}),
        )
        for bad in bad_events:
            await ws.send(bad)
            replies.append(await recv_json(ws))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 100_000}))
        replies.append(await recv_json(ws))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        replies += [await recv_json(ws), await recv_json(ws)]
        return replies


async def twilio_abuse(url: str, port: int) -> list[dict[str, Any]]:
    """Twilio's socket hears nothing back: a bad message is reported to the call's subscribers instead."""
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"ws://127.0.0.1:{port}/v1/twilio/media", {})
    start = {"callSid": "CAbad", "streamSid": "MZbad", "tracks": ["inbound"], "customParameters": {"api_key": API_KEY}}
    async with websockets.connect(f"{url}/v1/calls/CAbad/events", additional_headers=AUTH) as subscriber:
        headers = {"X-Twilio-Signature": signature}
        async with websockets.connect(f"{url}/v1/twilio/media", additional_headers=headers) as twilio:
            for message in ({"event": "start", "start": start}, "{oops", {"event": "teleport"},
                            {"event": "media", "media": {"track": "inbound", "payload": "%%%", "timestamp": "0"}},
                            {"event": "stop"}):  # fmt: skip
                await twilio.send(message if isinstance(message, str) else json.dumps(message))
            return [json.loads(m) async for m in subscriber]


async def abrupt(url: str) -> None:
    ws = await websockets.connect(f"{url}{DEEPGRAM}", additional_headers={"Authorization": f"Token {API_KEY}"})
    await ws.send(to_pcm16(sentences_16k()[1][:16000]))
    ws.transport.abort()  # no close frame, mid-utterance


async def healthy(url: str) -> list[dict[str, Any]]:
    audio = np.concatenate([silence(0.3), sentences_16k()[0], silence(1.0)])
    pcm = to_pcm16(audio)
    token = {"Authorization": f"Token {API_KEY}"}
    async with websockets.connect(f"{url}{DEEPGRAM}&endpointing=500", additional_headers=token) as ws:
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
            await asyncio.sleep(0.02)
        await ws.send(json.dumps({"type": "CloseStream"}))
        return [json.loads(m) async for m in ws]


def test_hostile_input_everywhere_and_a_bystander_unharmed(dialect_server: ServerHandle) -> None:
    url = dialect_server.ws_url

    async def scenario() -> tuple[Any, ...]:
        return await asyncio.gather(
            deepgram_abuse(url), realtime_abuse(url), twilio_abuse(url, dialect_server.port), abrupt(url), healthy(url)
        )

    deepgram_replies, realtime_replies, call_events, _, bystander = asyncio.run(asyncio.wait_for(scenario(), 120))
    *errors, finalized = deepgram_replies
    assert [e["type"] for e in errors] == ["Error"] * 4
    assert [e["variant"] for e in errors] == ["ProtocolError", "ProtocolError", "ProtocolError", "MessageTooLarge"]
    assert finalized["type"] == "Results" and finalized["from_finalize"]
    *errors, committed, completed = realtime_replies
    assert [e["type"] for e in errors] == ["error"] * 5
    assert all(e["error"]["type"] == "invalid_request_error" for e in errors)
    assert committed["type"] == "input_audio_buffer.committed" and completed["transcript"] == ""
    assert [e["type"] for e in call_events] == ["call.started", "error", "error", "error", "call.ended"]
    assert {e["code"] for e in call_events if e["type"] == "error"} == {"protocol_error"}
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in bystander if m["type"] == "Results")
    assert bystander[-1]["type"] == "Metadata" and wer(references()[0], text) < 0.3, text


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [(DEEPGRAM, {}, 401), (DEEPGRAM, {"Authorization": "Token nope"}, 401),
     ("/deepgram/v1/listen?encoding=speex", {"Authorization": f"Token {API_KEY}"}, 400),
     ("/deepgram/v1/listen?channels=99", {"Authorization": f"Token {API_KEY}"}, 400),
     ("/v1/realtime", AUTH, 400), (REALTIME, {"Authorization": "Bearer nope"}, 401)],
)  # fmt: skip
def test_refusals_are_http_statuses_at_the_handshake(
    dialect_server: ServerHandle, path: str, headers: dict[str, str], status: int
) -> None:
    async def attempt() -> None:
        async with websockets.connect(f"{dialect_server.ws_url}{path}", additional_headers=headers):
            pass

    with pytest.raises(websockets.InvalidStatus) as info:
        asyncio.run(attempt())
    assert info.value.response.status_code == status
