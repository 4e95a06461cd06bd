"""Finding 4's last part: a prompt too long for the handshake's request line goes in a ``configure`` message
before the audio, and reaches the decoder (real server, embedded model)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import websockets

from stream_server.clients.events import Error
from stream_server.clients.v1 import Client, transcribe

from ..conftest import ServerHandle
from ..helpers import silence, synthesize, to_pcm16

SPEECH = "Ask Shawn about it."  # tiny.en hears "shot the mounted." without a prompt
# inside the 2,000-character limit, but 11,941 bytes percent-encoded in a request line
LONG_PROMPT = "Names: Sean. " + "é" * 1987


def finals(server: ServerHandle, pcm: bytes, query: str = "", configure: dict[str, str] | None = None) -> list[str]:
    async def run() -> list[str]:
        url = f"{server.ws_url}/v1/listen?interim_results=false{query}"
        async with websockets.connect(url, max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.started"
            if configure is not None:
                await ws.send(json.dumps(configure))
            await ws.send(pcm)
            await ws.send(json.dumps({"type": "close_stream"}))
            events = [json.loads(m) async for m in ws]
        assert not [e for e in events if e["type"] == "error"], events
        return [e["text"] for e in events if e["type"] == "final"]

    return asyncio.run(run())


def test_a_prompt_in_a_configure_message_reaches_the_decoder(live_server: ServerHandle) -> None:
    try:
        pcm = to_pcm16(np.concatenate([synthesize(SPEECH), silence(1.0)]))
    except RuntimeError as exc:
        pytest.skip(f"espeak-ng is needed for speech: {exc}")
    plain = " ".join(finals(live_server, pcm))
    named = " ".join(finals(live_server, pcm, configure={"type": "configure", "prompt": "Names: Sean."}))
    assert "Sean" not in plain and "Sean" in named, (plain, named)
    assert len(LONG_PROMPT) == 2000
    with pytest.raises(websockets.InvalidStatus) as refused:  # the same prompt in the query: over 8 KiB
        finals(live_server, pcm, "&prompt=" + LONG_PROMPT)
    assert refused.value.response.status_code == 414
    # tiny.en echoes a prompt this odd: its text in the final shows the whole way from message to model
    echoed = " ".join(finals(live_server, pcm, configure={"type": "configure", "prompt": LONG_PROMPT}))
    assert "é" in echoed and "é" not in plain, (plain, echoed)


def test_the_python_client_sends_a_long_prompt_in_a_configure_message(live_server: ServerHandle) -> None:
    try:
        pcm = to_pcm16(np.concatenate([synthesize(SPEECH), silence(1.0)]))
    except RuntimeError as exc:
        pytest.skip(f"espeak-ng is needed for speech: {exc}")
    client = Client(live_server.ws_url, params={"prompt": LONG_PROMPT, "interim_results": False})
    assert "prompt" not in client.url
    transcript = asyncio.run(transcribe(client, pcm, realtime=False))
    assert transcript.close_code == 1000 and not [r for r in transcript.received if isinstance(r.event, Error)]
    assert "é" in transcript.text()  # tiny.en echoes this prompt: it reached the model
    short = Client(live_server.ws_url, params={"prompt": "Names: Sean.", "interim_results": False})
    assert "prompt=Names" in short.url  # a short prompt stays in the query (any server version takes it)
    assert "Sean" in asyncio.run(transcribe(short, pcm, realtime=False)).text()
