"""Transport-level denial of service (issue 18 findings 1, 3, 4): real sockets against a real server.

Each test reproduces what the attack did, bounded in count and on loopback only, and checks the server's
own resources (``/proc``: resident memory, open file descriptors) besides what the client sees.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import RawWebsocket, ServerHandle, rss_mb, start_server, wait_until

HEAD_TIMEOUT_S = 1.5
DRAIN_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path_factory.mktemp("guarded"),
        header_timeout_s=HEAD_TIMEOUT_S,
        drain_timeout_s=DRAIN_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
        max_queued_events=50,
    )
    yield handle
    handle.stop()


def open_fds(server: ServerHandle) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def health_s(server: ServerHandle) -> float:
    """Seconds ``GET /healthz`` took on a new connection (it must answer)."""
    started = time.monotonic()
    with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=5) as response:
        assert response.read() == b"ok"
    return time.monotonic() - started


def closed_by_server(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``within_s``; None if it is still open."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def connect(server: ServerHandle) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def ping_frames(count: int) -> bytes:
    """``count`` masked client pings with 125-byte payloads (the largest a control frame may carry)."""
    mask = b"\x01\x02\x03\x04"
    payload = bytes(a ^ mask[i % 4] for i, a in enumerate(b"p" * 125))
    return (struct.pack("!BB", 0x89, 0x80 | 125) + mask + payload) * count


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload  # a zero mask is a valid mask


def test_a_ping_flood_from_a_client_that_never_reads_stays_bounded(guarded: ServerHandle) -> None:
    """Finding 1: 2 x 250 MB of pings took RSS from 159 to 627 MB (every pong buffered for a client that
    never read). 64 MB here: before the fix about as much again was buffered in pongs."""
    ws = RawWebsocket(guarded.port, rcvbuf=4096, timeout_s=5)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    before = rss_mb(guarded)
    block = ping_frames(8000)  # about 1 MB
    sent = 0
    with contextlib.suppress(TimeoutError):  # the server may also stop reading a client it cannot answer
        while sent < 64 << 20:
            ws.sock.sendall(block)
            sent += len(block)
    assert wait_until(lambda: guarded.process.poll() is None and health_s(guarded) < 2, 10)
    grown = rss_mb(guarded) - before
    print(f"sent {sent / 2**20:.0f} MB of pings unread: server RSS {before:.0f} -> {before + grown:.0f} MB")
    assert grown < 24, f"RSS grew by {grown:.0f} MB on {sent / 2**20:.0f} MB of unanswered pings"
    ws.sock.close()


def test_a_session_that_ended_does_not_keep_a_never_reading_socket(guarded: ServerHandle) -> None:
    """Finding 1: a client that stops reading kept its socket (and the bytes buffered for it) after its
    session closed with ``slow_consumer``: 20 clients, 20 fds held as long as they kept TCP open."""
    baseline = open_fds(guarded)
    clients = [RawWebsocket(guarded.port, rcvbuf=4096) for _ in range(8)]
    assert open_fds(guarded) >= baseline + 4  # (a connection of an earlier test may be closing meanwhile)
    junk = json.dumps({"type": "x" * 100})  # each answered with an error event nobody reads
    for ws in clients:
        ws.sock.settimeout(5)
        with contextlib.suppress(TimeoutError, OSError):
            for _ in range(40):  # 40,000 errors: more than loopback's socket buffers (a few MB) hold
                ws.send_raw(b"".join(_masked_text(junk) for _ in range(1000)))
    # the sessions end (more than 50 events queued: slow_consumer); their sockets must go within the
    # drain timeout although the clients still hold them open and never read
    try:
        released = wait_until(lambda: open_fds(guarded) <= baseline, 10 + DRAIN_TIMEOUT_S * 2, interval_s=0.25)
        print(f"server fds: {baseline} before, {open_fds(guarded)} after 8 never-reading clients")
        assert released, f"{open_fds(guarded) - baseline} fds still held for clients that never read"
    finally:
        for ws in clients:
            ws.sock.close()


def test_idle_and_trickling_sockets_are_closed_and_health_still_answers(guarded: ServerHandle) -> None:
    """Finding 3: nothing timed out before a request was complete; idle sockets past the fd limit locked
    every client out. Here: more idle sockets than the connection cap, and requests trickled a byte at a time."""
    idle = [connect(guarded) for _ in range(MAX_CONNECTIONS + 20)]
    trickling = [connect(guarded) for _ in range(8)]
    for sock in trickling:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert health_s(guarded) < 2  # past the cap: the oldest idle socket made room
    started = time.monotonic()
    for _ in range(4):
        for sock in trickling:
            with contextlib.suppress(OSError):
                sock.sendall(b"X")
        time.sleep(0.3)
    outcomes = [closed_by_server(sock, HEAD_TIMEOUT_S + 3) for sock in trickling]
    assert all(o is not None for o in outcomes), "a trickling request was still open after the head timeout"
    assert all(o == b"" or o.startswith(b"HTTP/1.1 408") for o in outcomes if o is not None)
    assert any(o and o.startswith(b"HTTP/1.1 408") for o in outcomes)
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 4
    still_open = [s for s in idle if closed_by_server(s, 0.5) is None]
    assert not still_open, f"{len(still_open)} idle sockets still open after the head timeout"
    assert health_s(guarded) < 2
    for sock in idle + trickling:
        sock.close()


def test_past_the_connection_cap_a_new_connection_gets_a_clean_503(guarded: ServerHandle) -> None:
    """Connections that already sent a request (keep-alive) are not dropped for newcomers: past the cap the
    newcomer gets 503 in OpenAI's error shape at once, and once they go, the server answers again."""
    kept = []
    for _ in range(MAX_CONNECTIONS):
        conn = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok"
        kept.append(conn)
    refused = connect(guarded)
    answer = closed_by_server(refused, 3)
    assert answer is not None and answer.startswith(b"HTTP/1.1 503"), answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "overloaded" and body["error"]["type"] == "server_error"
    for conn in kept:
        conn.close()
    assert wait_until(lambda: health_s(guarded) < 2, 5)


def handshake(path: str, extra_headers: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        # 1,400 "é" (2,800 bytes of UTF-8, 8,400 percent-encoded): inside the 2,000-character prompt limit
        ("/v1/listen?prompt=" + "%C3%A9" * 1400, "", b"414"),
        ("/v1/listen?prompt=" + "%E4%B8%AD" * 1000, "", b"414"),
        ("/v1/listen", "Cookie: " + "c" * 9000 + "\r\n", b"431"),
    ],
    ids=["prompt-1400-e-acute", "prompt-1000-cjk", "cookie-9kb"],
)
def test_a_handshake_line_over_8_kib_is_answered_at_once(
    guarded: ServerHandle, path: str, headers: str, status: bytes
) -> None:
    """Finding 4: such a handshake got no response and the socket was held."""
    sock = connect(guarded)
    sock.sendall(handshake(path, headers))
    answer = closed_by_server(sock, 3)
    sock.close()
    assert answer is not None, "no answer to an over-long handshake line"
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


def test_a_handshake_line_just_under_the_limit_is_accepted(guarded: ServerHandle) -> None:
    """The documented limit (8192 bytes per line as sent, percent-encoding included) is where it is."""
    from stream_server.server import HANDSHAKE_LINE_LIMIT_BYTES

    line_overhead = len("GET /v1/listen?prompt= HTTP/1.1")
    accented = (HANDSHAKE_LINE_LIMIT_BYTES - line_overhead - 8) // 6  # 1,358 "é", inside 2,000 characters
    ws = RawWebsocket(guarded.port, "/v1/listen?prompt=" + "%C3%A9" * accented)
    ws.send_text(json.dumps({"type": "close_stream"}))
    events, code, _ = ws.read_until_closed()
    assert events[0]["type"] == "session.started" and code == 1000


def test_keys_in_percent_encoded_query_names_never_reach_the_log(guarded: ServerHandle) -> None:
    """Finding 5: ``?access%5Ftoken=KEY`` and ``?%61ccess_token=KEY`` were logged in clear. (Keys in a URL are
    also refused at the handshake now: the session never starts.)"""
    for query in ("access%5Ftoken=SECRET-ONE-8d1", "%61ccess_token=SECRET-TWO-8d1", "api%5fkey=SECRET-THREE-8d1"):
        ws = RawWebsocket(guarded.port, f"/v1/listen?{query}")
        ws.read_until_closed()
    log = Path(guarded.log_path).read_text()
    assert "[redacted]" in log
    assert "SECRET-" not in log
