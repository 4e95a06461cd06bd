"""Protocol and HTTP fuzzing (hypothesis) against a real server, while a well-behaved session streams speech.

What must hold for any input: the server never crashes or logs a traceback, never closes a session with 1011,
answers each bad input with an ``error`` event (or an OpenAI-shaped 4xx), sends exactly one final per utterance,
and the concurrent good sessions get correct finals.

Short mode (CI, default): a few dozen examples per test. Long mode: ``STREAM_TESTS_LONG=1`` (hundreds of
examples each, new random ones every run); see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream_server.transport.dialects.native import KNOWN_PARAMS

from ..conftest import RawWebsocket, ServerHandle, read_until_closed, server_status, start_server, wait_until
from ..helpers import StreamResult, silence, stream_audio, synthesize, to_pcm16, wer

LONG = os.environ.get("STREAM_TESTS_LONG") == "1"
TALLY: collections.Counter[str] = collections.Counter()  # what the fuzzing tried and got, printed at the end
MESSAGE_LIMIT = 16384
GOOD_TEXT = "Please send the quarterly report to the finance team."
FUZZ = settings(
    max_examples=1000 if LONG else 100,
    deadline=None,
    derandomize=not LONG,  # CI: the same examples every run; long mode explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    database=None,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(tmp_path_factory.mktemp("fuzz"), max_message_bytes=MESSAGE_LIMIT, max_sessions=200)
    yield handle
    handle.stop()
    log = handle.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-5000:]


class GoodSessions:
    """Streams a known sentence at real-time pace, session after session, until stopped."""

    def __init__(self, server: ServerHandle) -> None:
        self.payload = to_pcm16(np.concatenate([synthesize(GOOD_TEXT), silence(1.0)]))
        self.server = server
        self.results: list[StreamResult] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(asyncio.run(stream_audio(self.server.ws_url, self.payload)))
            except BaseException as exc:  # reported by check()
                self.failures.append(exc)
                return

    def __enter__(self) -> GoodSessions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def check(self) -> None:
        assert not self.failures, self.failures
        assert self.results, "no good session completed while fuzzing"
        for result in self.results:
            assert wer(GOOD_TEXT, result.text()) <= 0.2, result.finals
            assert [e["type"] for e in result.events][-1] == "session.closed"


# --- websocket frames and query strings ----------------------------------------------------------------------

VALID_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "sample_rate": st.sampled_from(["8000", "16000", "22050", "44100", "48000"]),
        "encoding": st.sampled_from(["pcm_s16le", "pcm_f32le"]),
        "channels": st.sampled_from(["1", "2", "8"]),
        "interim_results": st.sampled_from(["true", "false", "0", "yes"]),
        "word_timestamps": st.sampled_from(["true", "false"]),
        "endpointing_ms": st.sampled_from(["100", "500", "10000"]),
        "language": st.sampled_from(["en", "auto", ""]),
        "prompt": st.text(max_size=50),
    },
)
RANDOM_QUERY = st.dictionaries(
    st.sampled_from(sorted(KNOWN_PARAMS)) | st.text(min_size=1, max_size=8),
    st.text(max_size=12) | st.integers(-(10**6), 10**6).map(str),
    max_size=4,
)
CONTROL = st.builds(
    lambda d: json.dumps(d),
    st.dictionaries(
        st.sampled_from(["type", "data", "Type"]),
        st.sampled_from(["keepalive", "finalize", "dance", "", "KEEPALIVE"])
        | st.integers()
        | st.none()
        | st.lists(st.integers(), max_size=3),
        max_size=3,
    ),
)
_SPEECH = to_pcm16(synthesize("Turn left at the next corner and walk two blocks."))
SPEECH_CHUNKS = [_SPEECH[i : i + 12800] for i in range(0, len(_SPEECH), 12800)]  # 0.4 s each at 16 kHz s16
FRAME = st.one_of(
    st.sampled_from(SPEECH_CHUNKS),  # real speech, in any order (garbled at other rates and encodings)
    st.just(json.dumps({"type": "finalize"})),
    st.binary(max_size=4096),  # random audio: valid s16 samples, possibly NaN/inf as f32
    st.integers(MESSAGE_LIMIT + 1, 2 * MESSAGE_LIMIT).map(lambda n: bytes(n)),  # over the limit
    st.text(max_size=100),
    CONTROL,
    st.sampled_from(["[" * 16000, "1" * 5000, '{"type": ' + "9" * 5000 + "}", "x" * (MESSAGE_LIMIT + 1), "null"]),
)


def expected_error(frame: bytes | str) -> str | None:
    """The error code the server must answer a frame with (``None``: accepted; f32 NaNs are checked apart)."""
    if isinstance(frame, bytes):
        return "message_too_large" if len(frame) > MESSAGE_LIMIT else None
    if len(frame) > MESSAGE_LIMIT:
        return "message_too_large"
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return "protocol_error"
    if isinstance(message, dict) and message.get("type") in ("keepalive", "finalize"):
        return None
    return "protocol_error"


async def fuzz_session(server: ServerHandle, query: dict[str, str], frames: list[bytes | str]):  # noqa: ANN201
    async with websockets.connect(f"{server.ws_url}/v1/listen?{urlencode(query)}", max_size=None) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
            await ws.send(json.dumps({"type": "close_stream"}))
        return await read_until_closed(ws, 120)


def check_session(
    query: dict[str, str], frames: list[bytes | str], valid_query: bool, events: list[dict], code: int | None
) -> None:
    assert events, "no event at all"
    TALLY["ws sessions"] += 1
    TALLY["ws frames"] += len(frames)
    TALLY.update(f"ws error {e['code']}" for e in events if e["type"] == "error")
    TALLY["ws finals"] += sum(e["type"] == "final" for e in events)
    if events[0]["type"] == "error":
        assert not valid_query, events
        assert [e["type"] for e in events] == ["error"] and events[0]["code"] == "invalid_parameter", events
        assert code == 1008
        return
    assert events[0]["type"] == "session.started", events[:3]
    assert events[-1] == {**events[-1], "type": "session.closed", "reason": "client_closed"}, events[-3:]
    assert code == 1000
    got = [e["code"] for e in events if e["type"] == "error"]
    wanted = [c for c in map(expected_error, frames) if c is not None]
    assert [c for c in got if c in ("protocol_error", "message_too_large")] == wanted, (got, wanted)
    others = [c for c in got if c not in ("protocol_error", "message_too_large")]
    if query.get("encoding") == "pcm_f32le":
        assert set(others) <= {"invalid_audio"} and len(others) <= sum(isinstance(f, bytes) for f in frames)
    else:
        assert others == [], others
    started = sorted((e["channel"], e["utterance_id"]) for e in events if e["type"] == "speech.started")
    finals = sorted((e["channel"], e["utterance_id"]) for e in events if e["type"] == "final")
    assert finals == started  # exactly one final per utterance


@pytest.fixture(scope="module")
def good_sessions(server: ServerHandle) -> Iterator[GoodSessions]:
    with GoodSessions(server) as good:
        yield good
    good.check()


QUERY = st.one_of(VALID_QUERY.map(lambda q: (True, q)), RANDOM_QUERY.map(lambda q: (False, q)))


@FUZZ
@given(query=QUERY, frames=st.lists(FRAME, max_size=16))
@example(query=(True, {}), frames=["[" * 16000, '{"type": ' + "9" * 5000 + "}", bytes(MESSAGE_LIMIT + 1)])
@example(query=(True, {"encoding": "pcm_f32le", "channels": "2"}), frames=[b"\xff\xff\xff\x7f" * 64, b"\x01"])
def test_random_frames_and_queries(
    server: ServerHandle, good_sessions: GoodSessions, query: tuple[bool, dict[str, str]], frames: list[bytes | str]
) -> None:
    valid, params = query
    events, code, _ = asyncio.run(fuzz_session(server, params, frames))
    check_session(params, frames, valid, events, code)


_B64_SPEECH = [base64.b64encode(chunk).decode() for chunk in SPEECH_CHUNKS[:3]]
DIALECT_FRAMES = {
    "/deepgram/v1/listen?encoding=linear16&sample_rate=16000": st.one_of(
        st.sampled_from(SPEECH_CHUNKS),
        st.binary(max_size=2048),
        st.sampled_from([json.dumps({"type": t}) for t in ("KeepAlive", "Finalize", "Configure", "Bogus")]),
        st.text(max_size=60),
        CONTROL,
    ),
    "/v1/realtime?intent=transcription": st.one_of(
        st.sampled_from(_B64_SPEECH).map(lambda a: json.dumps({"type": "input_audio_buffer.append", "audio": a})),
        st.text(max_size=40).map(lambda a: json.dumps({"type": "input_audio_buffer.append", "audio": a})),
        st.sampled_from(
            ["input_audio_buffer.commit", "input_audio_buffer.clear", "session.update", "response.create"]
        ).map(lambda t: json.dumps({"type": t})),
        st.dictionaries(st.sampled_from(["type", "session", "audio"]), st.text(max_size=12), max_size=3).map(
            json.dumps
        ),
        st.binary(max_size=512),
        st.text(max_size=60),
    ),
    "/v1/twilio/media": st.one_of(
        st.just(
            json.dumps({"event": "start", "start": {"callSid": "CAfuzz", "streamSid": "MZfuzz", "tracks": ["inbound"]}})
        ),
        st.binary(max_size=160).map(
            lambda b: json.dumps(
                {"event": "media", "media": {"track": "inbound", "payload": base64.b64encode(b).decode()}}
            )
        ),
        st.text(max_size=40).map(lambda p: json.dumps({"event": "media", "media": {"payload": p}})),
        st.sampled_from(["connected", "mark", "dtmf", "stop", "weird"]).map(lambda e: json.dumps({"event": e})),
        st.text(max_size=60),
        st.binary(max_size=64),
    ),
}
CLOSERS = {"/deepgram/v1/listen?encoding=linear16&sample_rate=16000": json.dumps({"type": "CloseStream"}),
           "/v1/twilio/media": json.dumps({"event": "stop"})}  # fmt: skip


async def dialect_session(server: ServerHandle, path: str, frames: list[bytes | str]) -> int | None:
    """Send ``frames`` to a dialect endpoint (then its close message, if it has one); the close code."""
    async with websockets.connect(f"{server.ws_url}{path}", max_size=None, close_timeout=5) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
            if path in CLOSERS:
                await ws.send(CLOSERS[path])
                with contextlib.suppress(asyncio.TimeoutError):
                    async for _ in ws:  # until the server closes (Deepgram: after Metadata)
                        pass
        return ws.close_code


@FUZZ
@given(data=st.data(), path=st.sampled_from(sorted(DIALECT_FRAMES)))
def test_random_frames_on_every_dialect(
    server: ServerHandle, good_sessions: GoodSessions, data: st.DataObject, path: str
) -> None:
    """The dialect endpoints face the same fuzzing: whatever arrives, the server answers in the dialect's shape,
    never closes with 1011 and never logs a traceback (checked when the module's server stops)."""
    frames = data.draw(st.lists(DIALECT_FRAMES[path], max_size=12))
    code = asyncio.run(asyncio.wait_for(dialect_session(server, path, frames), 120))
    TALLY[f"dialect sessions {path.split('?')[0]}"] += 1
    assert code != 1011, (path, frames[:5])


def test_broken_websocket_framing_never_hurts_the_server(server: ServerHandle, good_sessions: GoodSessions) -> None:
    cases = {
        "invalid UTF-8 in a text frame": (b"\x81\x84" + bytes(4) + b"\xff\xfe\xfd\xfc", 1007),
        "unmasked client frame": (b"\x81\x05hello", 1002),
        "reserved opcode": (b"\x83\x80" + bytes(4), 1002),
        "reserved bits": (b"\xf1\x80" + bytes(4), 1002),
        "fragmented control frame": (b"\x09\x80" + bytes(4), 1002),
    }
    for name, (raw, close_code) in cases.items():
        ws = RawWebsocket(server.port)
        ws.send_raw(raw)
        _, code, _ = ws.read_until_closed()
        assert code == close_code, name
    for cut in (1, 2, 5, 9):  # a frame cut short, then the client vanishes
        ws = RawWebsocket(server.port)
        ws.send_raw((b"\x82\xfe\x10\x00" + bytes(4) + bytes(4096))[:cut])
        ws.abort()
    assert wait_until(lambda: server_status(server)["sessions"] <= 1, 15)  # at most the good session


@settings(FUZZ, max_examples=300 if LONG else 25)
@given(raw=st.binary(min_size=1, max_size=2048))
def test_random_bytes_after_the_handshake(server: ServerHandle, good_sessions: GoodSessions, raw: bytes) -> None:
    ws = RawWebsocket(server.port)
    ws.send_raw(raw)
    ws.sock.settimeout(0.5)  # random bytes may be a frame in progress: the server then just waits for more
    try:
        events, code, _ = ws.read_until_closed()
    finally:
        ws.abort()
    TALLY[f"raw bytes: close {code}"] += 1
    assert code != 1011
    assert all(
        e["type"] != "error" or e["code"] in ("protocol_error", "message_too_large", "invalid_audio") for e in events
    )


# --- HTTP multipart endpoints --------------------------------------------------------------------------------


def wav_bytes(audio: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


HELLO = wav_bytes(synthesize("hello there"))
FIELDS = st.dictionaries(
    st.sampled_from(
        ["model", "prompt", "response_format", "temperature", "language", "stream", "timestamp_granularities[]"]
    )
    | st.text(min_size=1, max_size=10),
    st.sampled_from(
        [
            "whisper-1",
            "tiny.en",
            "json",
            "text",
            "srt",
            "vtt",
            "verbose_json",
            "0",
            "0.5",
            "2",
            "nan",
            "en",
            "fr",
            "english",
            "word",
            "segment",
            "true",
            "false",
        ]
    )
    | st.text(max_size=30),
    max_size=5,
)


@st.composite
def upload_file(draw: st.DrawFn) -> tuple[str, bytes] | None:
    kind = draw(st.sampled_from(["none", "valid", "truncated", "corrupted", "random", "empty"]))
    name = draw(st.sampled_from(["a.wav", "a.mp3", "a.flac", "a.ogg", "notes.txt", "noext", ""]))
    if kind == "none":
        return None
    if kind == "valid":
        return name, HELLO
    if kind == "truncated":
        return name, HELLO[: draw(st.integers(0, len(HELLO) - 1))]
    if kind == "corrupted":
        data = bytearray(HELLO)
        for index in draw(st.lists(st.integers(0, len(HELLO) - 1), min_size=1, max_size=50)):
            data[index] = draw(st.integers(0, 255))
        return name, bytes(data)
    if kind == "random":
        return name, draw(st.binary(max_size=4096))
    return name, b""


def multipart(fields: dict[str, str], file: tuple[str, bytes] | None, boundary: str) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    if file is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n\r\n'
        parts.append(head.encode() + file[1] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def post_truncated(server: ServerHandle, path: str, content_type: str, body: bytes, cut: int) -> None:
    """Declare the whole body, send part of it, hang up."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:cut])


@FUZZ
@given(
    endpoint=st.sampled_from(["transcriptions", "translations"]),
    fields=FIELDS,
    file=upload_file(),
    framing=st.sampled_from(["complete", "complete", "truncated", "no-boundary", "wrong-boundary", "urlencoded"]),
    cut=st.floats(0, 1),
)
def test_random_uploads(
    server: ServerHandle,
    good_sessions: GoodSessions,
    endpoint: str,
    fields: dict[str, str],
    file: tuple[str, bytes] | None,
    framing: str,
    cut: float,
) -> None:
    path = f"/v1/audio/{endpoint}"
    fields = {k.replace('"', ""): v for k, v in fields.items()}
    body = multipart(fields, file, "fuzzboundary")
    content_type = {
        "no-boundary": "multipart/form-data",
        "wrong-boundary": "multipart/form-data; boundary=other",
        "urlencoded": "application/x-www-form-urlencoded",
    }.get(framing, "multipart/form-data; boundary=fuzzboundary")
    if framing == "truncated":
        post_truncated(server, path, content_type, body, int(len(body) * cut))
        TALLY["http truncated bodies"] += 1
        return
    response = httpx.post(server.base_url + path, content=body, headers={"content-type": content_type}, timeout=120)
    assert response.status_code in (200, 400, 404, 413), (response.status_code, response.text)
    TALLY[f"http {response.status_code}"] += 1
    if response.status_code >= 400:
        error = response.json()["error"]
        TALLY[f"http error {error['code']}"] += 1
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error


def test_random_frames_from_a_client_that_never_reads(server: ServerHandle, good_sessions: GoodSessions) -> None:
    """Pings and junk messages from a client that never reads a byte (issue 18 finding 1): the
    server's memory stays bounded and, once the client goes quiet, its socket is let go."""
    import random

    from ..conftest import RawWebsocket, rss_mb

    rng = random.Random(18)
    assert wait_until(lambda: len(good_sessions.results) >= 1, 120)  # the model warmed up: RSS means memory held
    ws = RawWebsocket(server.port, rcvbuf=4096, timeout_s=5)
    before = rss_mb(server)
    frames = []
    for _ in range(20000):
        opcode = rng.choice([0x89, 0x89, 0x89, 0x81])  # pings and junk messages (audio would warm the model up)
        payload = os.urandom(rng.randrange(0, 126)) if opcode != 0x81 else b'{"type": "%d"}' % rng.randrange(99)
        frames.append(bytes([opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)  # a zero mask is valid
    with contextlib.suppress(OSError):
        for _ in range(10):
            ws.sock.sendall(b"".join(frames))
    assert rss_mb(server) - before < 40
    TALLY["never-reading flood frames"] = 10 * len(frames)
    with contextlib.suppress(OSError):  # the server may have closed it already (slow_consumer)
        ws.sock.shutdown(socket.SHUT_WR)  # stops sending, still never reads
    assert wait_until(lambda: server_status(server)["sessions"] <= 1, 90), server_status(server)
    ws.sock.close()


def test_the_server_is_whole_after_fuzzing(server: ServerHandle, good_sessions: GoodSessions) -> None:
    """Runs last in this module: every fuzz session is gone and the server still transcribes."""
    assert wait_until(lambda: server_status(server)["sessions"] <= 1, 30), server_status(server)
    started = time.monotonic()
    while time.monotonic() - started < 60 and len(good_sessions.results) < 1:
        time.sleep(0.5)
    good_sessions.check()
    assert httpx.get(server.base_url + "/readyz", timeout=10).json()["ready"] is True
    TALLY["good sessions completed"] = len(good_sessions.results)
    print("fuzz tally:", json.dumps(dict(sorted(TALLY.items())), indent=1))
