"""Where a final's latency went (``transport/timing.py``): the stages a final reports with ``timing=true``, in
process on the fake backend, and the split itself on hand-made events."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from stream_server.app import create_app
from stream_server.config import Settings
from stream_server.decode.fake import FakeBackend
from stream_server.decode.types import DecodeTiming
from stream_server.metrics import Metrics
from stream_server.session.events import Final, SpeechEnded
from stream_server.transport.timing import FinalTimer

from .test_native import CHUNK, until_closed

STAGES = ("endpointing_ms", "queue_ms", "decode_ms", "send_ms")


def stream(client: TestClient, query: str, pcm: bytes) -> list[dict[str, Any]]:
    with client.websocket_connect(f"/v1/listen?interim_results=false&endpointing_ms=300{query}") as ws:
        ws.receive_json()
        for i in range(0, len(pcm), CHUNK):
            ws.send_bytes(pcm[i : i + CHUNK])
        ws.send_json({"type": "close_stream"})
        messages, code = until_closed(ws)
    assert code == 1000
    return [m for m in messages if m["type"] == "final"]


@pytest.fixture
def slow_client() -> Any:
    with TestClient(create_app(Settings(), FakeBackend(model_id="fake-model", latency_s=0.05))) as client:
        yield client


def test_a_final_asked_with_timing_says_where_its_latency_went(slow_client: TestClient, speech_pcm: bytes) -> None:
    finals = stream(slow_client, "&timing=true", speech_pcm)
    assert len(finals) == 1 and finals[0]["reason"] == "endpoint"
    timing = finals[0]["timing"]
    assert set(timing) == {*STAGES, "total_ms", "speculative"}
    assert all(timing[stage] >= 0 for stage in STAGES)
    assert sum(timing[stage] for stage in STAGES) == pytest.approx(timing["total_ms"], abs=0.3)
    # 300 ms of silence ends it, decided at the end of the 100 ms chunk that completes them
    assert 300 <= timing["endpointing_ms"] <= 420
    if not timing["speculative"]:  # a speculative decode ran (partly) before the end was decided
        assert timing["decode_ms"] >= 45
    metrics = slow_client.get("/metrics").text
    for stage in ("endpointing_wait", "queue_wait", "decode", "send"):
        count = re.search(rf"^stream_final_{stage}_seconds_count (\S+)$", metrics, re.M)
        assert count is not None and float(count.group(1)) == 1.0


def test_finals_say_nothing_new_unless_asked(slow_client: TestClient, speech_pcm: bytes) -> None:
    finals = stream(slow_client, "", speech_pcm)
    assert len(finals) == 1 and "timing" not in finals[0]
    assert "stream_final_send_seconds_count 1.0" in slow_client.get("/metrics").text  # measured all the same


def test_timing_must_be_a_boolean(slow_client: TestClient) -> None:
    with slow_client.websocket_connect("/v1/listen?timing=maybe") as ws:
        assert ws.receive_json()["message"] == "timing must be true or false, got 'maybe'"


def final(decode_s: float | None) -> Final:
    decode = None if decode_s is None else DecodeTiming(0.0, 1.0, 1.0 + decode_s)
    return Final(0, 0, 0.5, 2.0, "hi", "en", None, endpointing_s=0.5, decode=decode)


@pytest.mark.parametrize(
    ("decode_s", "speculative"),
    [(0.01, False), (5.0, True), (None, False)],
)
def test_the_stages_split_the_time_after_the_decision(decode_s: float | None, speculative: bool) -> None:
    timer = FinalTimer(Metrics(), logging.LoggerAdapter(logging.getLogger("test")))
    timer.show = True
    timer.passed((1, 0, 0), SpeechEnded(0, 0, 2.0, "endpoint", 2.5), [])
    time.sleep(0.05)
    message: dict[str, Any] = {"type": "final"}
    timer.passed((1, 0, 0), final(decode_s), [message])
    time.sleep(0.02)
    timing = timer.written(message)
    assert timing is not None and timing.speculative is speculative
    assert timing.endpointing_s == 0.5
    after = timing.queue_s + timing.decode_s  # decision -> ready: the decode counts only within it
    assert 0.05 <= after < 0.5 and timing.send_s >= 0.02
    assert timing.decode_s == pytest.approx(0.01 if decode_s == 0.01 else after if speculative else 0.0)
    assert message["timing"]["total_ms"] == pytest.approx(timing.total_s * 1000, abs=0.1)
    assert timer.written(message) is None  # once
