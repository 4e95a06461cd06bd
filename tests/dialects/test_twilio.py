"""Twilio Media Streams dialect and the call-events hub, sans-I/O: signatures, start/media/stop, tracks as
channels, gap filling, events published under the call id (never on Twilio's socket), webhooks bounded."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from stream_server.errors import ProtocolError, Unauthorized
from stream_server.session.events import Partial, SpeechStarted
from stream_server.transport.calls import CallEvents
from stream_server.transport.dialects.base import AudioIn, CloseIn, SessionInfo, StartIn
from stream_server.transport.dialects.twilio import TwilioDialect

from .builders import final, handshake

twilio = pytest.importorskip("twilio.request_validator", reason="the twilio package is in the dialects-test extra")

TOKEN = "twilio-auth-token"
PATH = "/v1/twilio/media"


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], str | None]] = []

    def publish(self, call_sid: str, message: dict[str, Any], webhook_url: str | None = None) -> None:
        self.published.append((call_sid, message, webhook_url))


def signed(url: str, token: str = TOKEN) -> dict[str, str]:
    return {
        "X-Twilio-Signature": twilio.RequestValidator(token).compute_signature(url, {}),
        "Host": "calls.example.com",
    }


def start_message(tracks: list[str], **custom: str) -> str:
    start = {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": tracks, "customParameters": custom,
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": start})


def media(track: str, payload: bytes, timestamp_ms: int) -> str:
    body = {"track": track, "chunk": "1", "timestamp": str(timestamp_ms), "payload": base64.b64encode(payload).decode()}
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": body})


def test_signature_is_checked_when_a_token_is_configured() -> None:
    dialect = TwilioDialect(Recorder(), auth_token=TOKEN)
    accepted = dialect.accept(handshake(headers=signed(f"wss://calls.example.com{PATH}"), path=PATH))
    assert accepted.ready is False and accepted.params.encoding == "mulaw" and accepted.params.sample_rate == 8000
    for headers in ({"Host": "calls.example.com"}, signed(f"wss://calls.example.com{PATH}", "other-token"),
                    signed("wss://calls.example.com/elsewhere")):  # fmt: skip
        with pytest.raises(Unauthorized):
            TwilioDialect(Recorder(), auth_token=TOKEN).accept(handshake(headers=headers, path=PATH))
    TwilioDialect(Recorder()).accept(handshake(path=PATH))  # no token configured: not checked


def test_start_media_stop_with_two_tracks() -> None:
    sink = Recorder()
    dialect = TwilioDialect(sink)
    dialect.accept(handshake(path=PATH))
    assert dialect.on_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})) == []
    hook = "https://hooks.example.com/x"
    custom = {"api_key": "k1", "language": "en-US", "endpointing_ms": "700", "callback_url": hook}
    (start,) = dialect.on_text(start_message(["inbound", "outbound"], **custom))
    assert isinstance(start, StartIn) and start.api_key == "k1"
    assert (start.params.channels, start.params.mixdown, start.params.endpointing_ms) == (2, False, 700)
    assert dialect.on_text(media("inbound", b"\x01" * 160, 0)) == [AudioIn(b"\x01" * 160, channel=0)]
    assert dialect.on_text(media("outbound", b"\x02" * 160, 0)) == [AudioIn(b"\x02" * 160, channel=1)]
    # inbound lost 60 ms: filled with mu-law silence so the track keeps call time
    gap, chunk = dialect.on_text(media("inbound", b"\x03" * 160, 80))
    assert gap == AudioIn(b"\xff" * 480, channel=0) and chunk == AudioIn(b"\x03" * 160, channel=0)
    assert dialect.on_text(json.dumps({"event": "mark", "mark": {"name": "m"}})) == []
    assert dialect.on_text(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}})) == [CloseIn()]

    assert dialect.started(SessionInfo("s1", "tiny.en", start.params)) == []
    assert dialect.render(SpeechStarted(1, 0, 0.2)) == []
    assert dialect.render(Partial(1, 0, 0.2, 0.8, "hello", "")) == []
    assert dialect.render(final("Hello there.", channel=1)) == []
    assert dialect.closed("closed_by_client", 2.0) == []
    kinds = [(m["type"], m.get("track"), url) for _, m, url in sink.published]
    assert kinds == [("call.started", None, None), ("speech.started", "outbound", None), ("partial", "outbound", None),
                     ("final", "outbound", hook), ("call.ended", None, None)]  # fmt: skip
    assert {sid for sid, _, _ in sink.published} == {"CA1"}
    assert all(m["call_sid"] == "CA1" for _, m, _ in sink.published)


@pytest.mark.parametrize(
    "text",
    ["{bad", "[]", json.dumps({"event": "weird"}), media("inbound", b"x", 0)],
)
def test_bad_messages_before_start(text: str) -> None:
    dialect = TwilioDialect(Recorder())
    dialect.accept(handshake(path=PATH))
    with pytest.raises(ProtocolError):
        dialect.on_text(text)


def test_bad_messages_after_start() -> None:
    dialect = TwilioDialect(Recorder())
    dialect.accept(handshake(path=PATH))
    dialect.on_text(start_message(["inbound"]))
    bad_payload = json.dumps({"event": "media", "media": {"track": "inbound", "payload": "!!", "timestamp": "0"}})
    for text in (bad_payload, media("outbound", b"x", 0), start_message(["inbound"])):
        with pytest.raises(ProtocolError):
            dialect.on_text(text)
    with pytest.raises(ProtocolError):
        dialect.on_binary(b"\x00")
    other = TwilioDialect(Recorder())
    other.accept(handshake(path=PATH))
    for custom in ({"endpointing_ms": "5"}, {"language": "de"}, {"interim_results": "perhaps"}):
        with pytest.raises(ProtocolError):
            other.on_text(start_message(["inbound"], **custom))


def test_hub_fans_out_and_cuts_off_a_slow_subscriber() -> None:
    async def scenario() -> None:
        hub = CallEvents(max_queue=2)
        fast, slow, other = hub.subscribe("CA1"), hub.subscribe("CA1"), hub.subscribe("CA2")
        hub.publish("CA1", {"type": "final", "text": "a"})
        assert fast.queue.get_nowait() == {"type": "final", "text": "a"}
        hub.publish("CA1", {"type": "final", "text": "b"})
        assert not slow.overflowed and other.queue.empty()
        hub.publish("CA1", {"type": "final", "text": "c"})  # slow holds a, b: full
        assert slow.overflowed and not fast.overflowed
        assert [fast.queue.get_nowait()["text"] for _ in range(2)] == ["b", "c"]
        hub.unsubscribe(fast)
        hub.unsubscribe(slow)
        hub.publish("CA1", {"type": "final", "text": "e"})  # no one listens: nothing held
        await hub.aclose()

    asyncio.run(scenario())


def test_webhooks_only_under_allowed_prefixes_and_bounded() -> None:
    posted: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    async def scenario() -> None:
        hub = CallEvents(webhook_prefixes=("https://hooks.example.com/",), max_webhooks_in_flight=2)
        hub._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        assert not hub.webhook_allowed("https://evil.example.com/") and not hub.webhook_allowed("file:///etc")
        hub.publish("CA1", {"type": "final", "text": "no"}, "https://evil.example.com/x")
        for text in ("one", "two", "three"):
            hub.publish("CA1", {"type": "final", "text": text}, "https://hooks.example.com/x")
        await hub.aclose()
        assert [p["text"] for p in posted] == ["one", "two"] and hub.dropped_webhooks == 1

    asyncio.run(scenario())
