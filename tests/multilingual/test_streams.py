"""Many languages through protocol v1 streams on the real ``base`` model and real speech: language detected per
utterance, hints and the lock, a stream that changes language, and streaming translation."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from ..conftest import ServerHandle, start_server
from ..helpers import silence, stream_audio, to_pcm16, wer
from .conftest import Clip, clip, error_rate, needs_extra, non_english_clips

pytestmark = needs_extra

# Measured here (base, int8, CPU) through a stream; each test allows its figure plus a margin. zh: base writes
# traditional characters (the reference is simplified); sv 002: base writes the numbers as digits.
STREAM_ERROR = {
    "aishell1_BAC009S0724W0121_zh.wav": 0.5,
    "commonvoice_ja_24511055.wav": 0.37,
    "mls_spanish_13697_11991_000000.wav": 0.227,
    "nst_swedish_se10x016-08071999-1334_u0016002.wav": 0.889,
    "nst_swedish_se10x016-08071999-1334_u0016003.wav": 0.154,
    "nst_swedish_se10x016-08071999-1334_u0016004.wav": 0.368,
}
MARGIN = 0.12


def stream(server: ServerHandle, audio: np.ndarray, **params: str):  # noqa: ANN201 (helpers.StreamResult)
    payload = to_pcm16(np.concatenate([audio, silence(1.0)]))
    return asyncio.run(stream_audio(server.ws_url, payload, realtime=False, params=params))


@pytest.mark.parametrize("recording", non_english_clips(), ids=lambda c: c.language + "-" + c.name[:24])
def test_each_recording_through_a_stream(base_server: ServerHandle, recording: Clip) -> None:
    result = stream(base_server, recording.audio())
    finals = [f for f in result.finals if f["text"]]
    assert finals, result.events
    assert [f["language"] for f in finals] == [recording.language] * len(finals)
    assert all(0.5 <= f["language_probability"] <= 1.0 for f in finals)
    error = error_rate(recording.language, recording.text, result.text())
    print(f"stream {recording.name}: {error:.3f} {result.text()!r}")
    assert error <= STREAM_ERROR[recording.name] + MARGIN, result.text()


# Hand-written English translations of the clips (not model output), and the content words a translation must
# carry; base's translations are rough, so a share of them is required (measured shares in the comments).
TRANSLATIONS = {
    "mls_spanish_13697_11991_000000.wav": (
        "The surprise and displeasure that the substitution of one sister-in-law for another caused Wentworth, the "
        "expression that appeared on his face, the astonishment he showed and the words, barely held back, that "
        "came to his lips while Carlos spoke to him",
        ("surprise", "sister", "face", "words", "lips", "carlos"),
    ),
    "nst_swedish_se10x016-08071999-1334_u0016002.wav": (
        "Testing one two three four five six seven eight.",
        ("testing", "one", "two", "three", "four", "five", "six", "seven", "eight"),
    ),
    "nst_swedish_se10x016-08071999-1334_u0016003.wav": (
        "Have you seen our sweet grandchildren playing and romping outside in the neighbours' garden!",
        ("seen", "grandchildren", "playing", "outside", "garden"),
    ),
    "nst_swedish_se10x016-08071999-1334_u0016004.wav": (
        "Our family doctor is admittedly getting old and frail, but he has such a pleasant manner!",
        ("doctor", "old", "frail", "pleasant", "manner"),
    ),
}
TRANSLATION_SHARE = {  # measured share less one word, at least one word
    "mls_spanish_13697_11991_000000.wav": 2 / 6,  # 3/6: surprise, words, lips
    "nst_swedish_se10x016-08071999-1334_u0016002.wav": 7 / 9,  # 8/9: "Test 1, 2, ... 8"
    "nst_swedish_se10x016-08071999-1334_u0016003.wav": 1 / 5,  # 1/5: seen ("our rare barn barns")
    "nst_swedish_se10x016-08071999-1334_u0016004.wav": 1 / 5,  # 1/5: old ("Our house owners ...")
}
NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven", "8": "eight"}


def content_share(text: str, keys: tuple[str, ...]) -> float:
    words = {NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9]+", text.lower())}
    return sum(any(w.startswith(k) for w in words) for k in keys) / len(keys)


@pytest.mark.parametrize("name", sorted(TRANSLATIONS), ids=lambda n: n[:28])
def test_translate_streams_english(base_server: ServerHandle, name: str) -> None:
    recording = clip(name)
    reference, keys = TRANSLATIONS[name]
    result = stream(base_server, recording.audio(), task="translate")
    text = result.text()
    share = content_share(text, keys)
    print(f"translate {name}: share {share:.2f} {text!r}")
    assert {f["language"] for f in result.finals if f["text"]} == {recording.language}  # the source language
    assert share >= TRANSLATION_SHARE[name], (text, reference)
    assert not re.search("[åäöñáéíóú]", text.lower()), text  # no Swedish or Spanish letters left


@pytest.fixture(scope="module")
def whole_utterance_server(base_model_path: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``base`` without the soft length cut, so the 14.85 s Spanish clip stays one utterance."""
    handle = start_server(tmp_path_factory.mktemp("base-whole"), model="base", soft_max_utterance_s=0)
    yield handle
    handle.stop()


def test_a_stream_that_changes_language(whole_utterance_server: ServerHandle) -> None:
    """English, Spanish, English with pauses: three finals, each in its own language, none translated (English
    text as the rolling prompt makes Whisper translate Spanish speech unless it is left out)."""
    first, spanish, last = (
        clip("sense_and_sensibility_01_0870"),
        clip("mls_spanish"),
        clip("sense_and_sensibility_01_0880"),
    )
    audio = np.concatenate([first.audio(), silence(1.5), spanish.audio(), silence(1.5), last.audio()])
    result = stream(whole_utterance_server, audio)
    finals = [f for f in result.finals if f["text"]]
    assert [f["language"] for f in finals] == ["en", "es", "en"], finals
    assert wer(first.text, finals[0]["text"]) <= 0.1
    assert error_rate("es", spanish.text, finals[1]["text"]) <= STREAM_ERROR[spanish.name] + MARGIN, finals[1]
    assert wer(last.text, finals[2]["text"]) <= 0.15  # measured 0.125: "ill-sposed"
    assert not {"the", "surprise", "and"} & set(re.findall(r"[a-z]+", finals[1]["text"].lower()))


def test_hints_and_the_lock(base_server: ServerHandle) -> None:
    spanish = clip("mls_spanish").audio()[: 16000 * 6]
    hinted = stream(base_server, spanish, languages="en,DE")
    assert {f["language"] for f in hinted.finals if f["text"]} <= {"en", "de"}
    assert all(0.0 <= f["language_probability"] <= 1.0 for f in hinted.finals)
    with_truth = stream(base_server, spanish, languages="en,es")
    assert {f["language"] for f in with_truth.finals if f["text"]} == {"es"}
    locked = stream(base_server, spanish, language="sv")
    assert locked.of("session.started")[0]["language"] == "sv"
    assert {(f["language"], f["language_probability"]) for f in locked.finals if f["text"]} == {("sv", 1.0)}


@pytest.mark.parametrize(("query", "param"), [("languages=en,xx", "languages"), ("language=zz", "language")])
def test_unknown_language_codes_are_refused(base_server: ServerHandle, query: str, param: str) -> None:
    import json

    import websockets

    async def scenario() -> tuple[dict, int]:
        async with websockets.connect(f"{base_server.ws_url}/v1/listen?{query}") as ws:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None
            return event, closed.value.rcvd.code

    event, code = asyncio.run(scenario())
    assert event["type"] == "error" and event["code"] == "invalid_parameter" and param in event["message"], event
    assert code == 1008


def test_partials_carry_the_language(base_server: ServerHandle) -> None:
    recording = clip("mls_spanish")
    payload = to_pcm16(np.concatenate([recording.audio(), silence(1.0)]))
    result = asyncio.run(stream_audio(base_server.ws_url, payload))  # real-time pace: partials come
    partials = result.of("partial")
    assert partials, result.events
    assert {p["language"] for p in partials} == {"es"}
    assert all(0.0 <= p["language_probability"] <= 1.0 for p in partials)
