"""Protocol v1 end to end: a real server on a free port, the embedded model, espeak-ng speech."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import urllib.request

import numpy as np
import pytest
import websockets

from ..helpers import silence, stream_audio, synthesize, to_pcm16, wer

FIRST = "The children are playing football in the park."
CALL = "Thank you for calling customer support, how can I help you?"
SECOND = "Please send the quarterly report to the finance team."
THIRD = "My favorite color is green and I like to read books."


@pytest.fixture(scope="module")
def two_sentences() -> np.ndarray:
    return np.concatenate([silence(0.3), synthesize(FIRST), silence(1.0), synthesize(SECOND), silence(1.0)])


def status(server) -> dict:
    with urllib.request.urlopen(f"{server.base_url}/v1/status") as response:
        return json.loads(response.read())


def test_two_sentences_give_two_finals_with_partials_first(live_server, two_sentences):
    result = asyncio.run(stream_audio(live_server.ws_url, to_pcm16(two_sentences)))
    types = [e["type"] for e in result.events]
    assert types[0] == "session.started" and types[-1] == "session.closed"
    finals = result.finals
    assert [f["utterance_id"] for f in finals] == [0, 1], finals
    assert wer(FIRST, finals[0]["text"]) <= 0.2, finals[0]
    assert wer(SECOND, finals[1]["text"]) <= 0.2, finals[1]
    assert finals[0]["end"] <= finals[1]["start"]
    for final in finals:
        index = result.events.index(final)
        earlier = result.events[:index]
        assert any(e["type"] == "partial" and e["utterance_id"] == final["utterance_id"] for e in earlier)
        assert any(e["type"] == "speech.started" and e["utterance_id"] == final["utterance_id"] for e in earlier)
    for partial in result.of("partial"):
        assert partial["text"].startswith(partial["stable_text"])
    latencies = [latency for _, latency in result.final_arrivals]
    print(
        f"final latencies (end of utterance sent -> final received): {[round(x, 3) for x in latencies]}, "
        f"median {statistics.median(latencies):.3f} s"
    )
    closed = result.of("session.closed")[0]
    assert closed["reason"] == "client_closed"
    assert closed["audio_seconds"] == pytest.approx(len(two_sentences) / 16000, abs=0.01)


def test_stable_text_is_never_retracted(live_server):
    audio = np.concatenate([synthesize(FIRST + " " + SECOND), silence(1.0)])
    result = asyncio.run(stream_audio(live_server.ws_url, to_pcm16(audio)))
    stable = [p["stable_text"] for p in result.of("partial") if p["utterance_id"] == 0]
    assert len(stable) >= 3
    for before, after in zip(stable, stable[1:]):
        assert after.startswith(before)


def test_close_stream_flushes_the_open_utterance(live_server):
    audio = synthesize(THIRD)  # no trailing silence: only close_stream can end it
    result = asyncio.run(stream_audio(live_server.ws_url, to_pcm16(audio), realtime=False))
    assert len(result.finals) == 1
    assert wer(THIRD, result.finals[0]["text"]) <= 0.2
    assert result.events[-1]["type"] == "session.closed"


def test_finalize_ends_the_utterance_and_the_session_goes_on(live_server):
    async def scenario() -> list[dict]:
        events: list[dict] = []
        async with websockets.connect(f"{live_server.ws_url}/v1/listen") as ws:
            await ws.send(to_pcm16(synthesize(FIRST)))
            await ws.send(json.dumps({"type": "finalize"}))
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                events.append(event)
                if event["type"] == "final":
                    break
            await ws.send(to_pcm16(np.concatenate([synthesize(SECOND), silence(1.0)])))
            await ws.send(json.dumps({"type": "close_stream"}))
            async for raw in ws:
                events.append(json.loads(raw))
        return events

    events = asyncio.run(scenario())
    finals = [e for e in events if e["type"] == "final"]
    assert [f["utterance_id"] for f in finals] == [0, 1]
    assert wer(FIRST, finals[0]["text"]) <= 0.2 and wer(SECOND, finals[1]["text"]) <= 0.2


def test_stereo_channels_are_independent_streams(live_server):
    left = np.concatenate([synthesize(FIRST), silence(1.0)])
    right = np.concatenate([silence(0.5), synthesize(SECOND), silence(1.0)])
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype=np.float32)
    stereo[: len(left), 0] = left
    stereo[: len(right), 1] = right
    result = asyncio.run(
        stream_audio(
            live_server.ws_url,
            to_pcm16(stereo.reshape(-1)),
            bytes_per_second=64000,
            params={"channels": "2"},
            realtime=False,
        )
    )
    assert result.of("session.started")[0]["channels"] == 2
    by_channel = {c: [f for f in result.finals if f["channel"] == c] for c in (0, 1)}
    assert len(by_channel[0]) == 1 and len(by_channel[1]) == 1, result.finals
    assert wer(FIRST, by_channel[0][0]["text"]) <= 0.2
    assert wer(SECOND, by_channel[1][0]["text"]) <= 0.2
    assert by_channel[1][0]["start"] >= 0.45  # its own timeline: speech starts after 0.5 s on the right


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_sample_rates_are_resampled(live_server, rate):
    audio = np.concatenate([synthesize(CALL, rate=rate), silence(1.0, rate)])
    result = asyncio.run(stream_audio(live_server.ws_url, to_pcm16(audio), sample_rate=rate, realtime=False))
    assert len(result.finals) == 1
    assert wer(CALL, result.finals[0]["text"]) <= 0.2
    assert result.finals[0]["end"] <= len(audio) / rate + 0.05


def test_float32_encoding(live_server):
    audio = np.concatenate([synthesize(SECOND), silence(1.0)]).astype("<f4")
    result = asyncio.run(
        stream_audio(
            live_server.ws_url,
            audio.tobytes(),
            bytes_per_second=64000,
            params={"encoding": "pcm_f32le"},
            realtime=False,
        )
    )
    assert wer(SECOND, result.text()) <= 0.2


def test_word_timestamps_lie_inside_the_final(live_server):
    audio = np.concatenate([silence(0.5), synthesize(FIRST), silence(1.0)])
    result = asyncio.run(
        stream_audio(live_server.ws_url, to_pcm16(audio), params={"word_timestamps": "true"}, realtime=False)
    )
    final = result.finals[0]
    words = final["words"]
    assert len(words) >= 6
    assert " ".join(w["word"] for w in words).split() == final["text"].split()
    for w in words:  # the speech start/end come from 30 ms VAD frames, alignment from 20 ms tokens
        assert final["start"] - 0.35 <= w["start"] <= w["end"] <= final["end"] + 0.35
        assert 0.0 <= w["probability"] <= 1.0
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


def test_concurrent_sessions_share_batches(live_server):
    """Four sessions of two utterances each: their rolling prompts differ in length by the second utterance,
    and batches mixing them must still decode every one of them right."""
    scripts = [(FIRST, SECOND), (SECOND, THIRD), (THIRD, CALL), (CALL, FIRST)]
    before = status(live_server)["scheduler"]

    async def run_all() -> list:
        def padded(text: str, seconds: float) -> np.ndarray:  # same timing in every session: shared batches
            speech = synthesize(text)
            return np.concatenate([speech, silence(seconds - len(speech) / 16000)])

        payloads = [to_pcm16(np.concatenate([padded(a, 5.0), padded(b, 5.0)])) for a, b in scripts]
        return await asyncio.gather(*(stream_audio(live_server.ws_url, p) for p in payloads))

    results = asyncio.run(run_all())
    for (a, b), result in zip(scripts, results):
        assert result.of("error") == []
        assert [f["utterance_id"] for f in result.finals] == [0, 1]
        assert wer(a, result.finals[0]["text"]) <= 0.2 and wer(b, result.finals[1]["text"]) <= 0.2
    after = status(live_server)["scheduler"]
    assert after["batches"] > before["batches"]
    assert after["max_owners_in_batch"] >= 2, after
    assert max(int(size) for size in after["batch_size_histogram"]) >= 2


@pytest.mark.parametrize(
    "query, param",
    [
        ("sample_rate=4000", "sample_rate"),
        ("encoding=mp3", "encoding"),
        ("channels=0", "channels"),
        ("interim_results=maybe", "interim_results"),
        ("language=fr", "language"),
        ("bogus=1", "bogus"),
        ("endpointing_ms=abc", "endpointing_ms"),
    ],
)
def test_invalid_parameters_get_an_error_then_close_1008(live_server, query, param):
    async def scenario():
        async with websockets.connect(f"{live_server.ws_url}/v1/listen?{query}") as ws:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return event, closed.value.rcvd.code

    event, code = asyncio.run(scenario())
    assert event["type"] == "error" and event["code"] == "invalid_parameter"
    assert param in event["message"]
    assert code == 1008


def test_bad_messages_get_errors_and_the_session_goes_on(live_server):
    async def scenario() -> list[dict]:
        events = []
        async with websockets.connect(f"{live_server.ws_url}/v1/listen") as ws:
            await ws.send("{not json")
            await ws.send(json.dumps({"type": "dance"}))
            await ws.send(json.dumps([1, 2]))
            await ws.send(json.dumps({"type": "keepalive"}))
            await ws.send(to_pcm16(np.concatenate([synthesize(SECOND), silence(1.0)])))
            await ws.send(json.dumps({"type": "close_stream"}))
            async for raw in ws:
                events.append(json.loads(raw))
        return events

    events = asyncio.run(scenario())
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["protocol_error"] * 3
    assert "malformed JSON" in errors[0]["message"] and "dance" in errors[1]["message"]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and wer(SECOND, finals[0]["text"]) <= 0.2
    assert events[-1]["type"] == "session.closed"


def test_audio_after_close_stream_is_refused_once_and_nothing_follows_session_closed(live_server):
    """A live source keeps sending until it hears the close: one error says the audio is ignored, the final
    still comes, and ``session.closed`` is the last event however long the source goes on."""

    async def scenario() -> list[dict]:
        events = []
        async with websockets.connect(f"{live_server.ws_url}/v1/listen") as ws:
            await ws.send(to_pcm16(synthesize(SECOND)))
            await ws.send(json.dumps({"type": "close_stream"}))

            async def keep_sending() -> None:
                chunk = to_pcm16(silence(0.1))
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        await ws.send(chunk)
                        await asyncio.sleep(0.01)

            sender = asyncio.create_task(keep_sending())
            async for raw in ws:
                events.append(json.loads(raw))
            sender.cancel()
        return events

    events = asyncio.run(scenario())
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and "began closing" in errors[0]["message"], errors
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and wer(SECOND, finals[0]["text"]) <= 0.2
    assert events[-1]["type"] == "session.closed"


def test_odd_byte_chunks_are_reassembled(live_server):
    payload = to_pcm16(np.concatenate([synthesize(THIRD), silence(1.0)]))
    result = asyncio.run(stream_audio(live_server.ws_url, payload, chunk_s=0.0317, realtime=False))
    assert wer(THIRD, result.text()) <= 0.2


def test_a_busy_model_never_delays_audio_intake(live_server, tmp_path):
    """While a long upload keeps the model busy, a live session's audio is still taken in at once: its
    speech.started (decided by the VAD, no model involved) arrives promptly, and its final still arrives."""
    import threading

    import httpx

    from ..helpers import write_wav

    long_speech = np.concatenate([np.concatenate([synthesize(s), silence(0.6)]) for s in [FIRST, SECOND, THIRD] * 6])
    upload = write_wav(tmp_path / "long.wav", long_speech)
    done = threading.Event()

    def post_upload() -> None:
        with upload.open("rb") as f:
            httpx.post(
                f"{live_server.base_url}/v1/audio/transcriptions",
                files={"file": f},
                data={"model": "whisper-1"},
                timeout=300,
            )
        done.set()

    thread = threading.Thread(target=post_upload)
    thread.start()
    try:
        time_to_busy = 0.0
        while status(live_server)["engine_busy"] is False and time_to_busy < 10:
            time_to_busy += 0.05
            __import__("time").sleep(0.05)
        audio = np.concatenate([silence(1.0), synthesize(CALL), silence(1.0)])
        result = asyncio.run(stream_audio(live_server.ws_url, to_pcm16(audio)))
    finally:
        thread.join(300)
    assert done.is_set()
    started = result.of("speech.started")
    assert len(started) == 1
    assert wer(CALL, result.text()) <= 0.2
    # speech.started is stamped in stream time; at real-time pace it must arrive within 0.5 s of that audio
    # having been sent, however busy the model is
    assert started[0]["start"] == pytest.approx(1.0, abs=0.3)
    intake_delay = result.delay_after(started[0], started[0]["start"] + 0.15)  # 4 voiced 30 ms frames decide
    print(f"speech.started arrived {intake_delay:.3f} s after its audio was sent (model busy: {time_to_busy < 10})")
    assert intake_delay < 0.5
