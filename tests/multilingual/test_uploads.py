"""Many languages through the OpenAI-compatible upload path on the real ``base`` model and real speech, raw HTTP
and the official ``openai`` client: the detected language in ``verbose_json``, hints, the lock, translation."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from stream_server.transport.languages import LANGUAGE_NAMES

from ..conftest import ServerHandle
from .conftest import Clip, clip, error_rate, needs_extra, non_english_clips

# The client marks ``audio.translations`` deprecated (OpenAI's own models); the endpoint is what is tested.
pytestmark = [needs_extra, pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")]

# Measured here (base, int8, CPU, beam 5 as uploads decode); each test allows its figure plus a margin.
UPLOAD_ERROR = {
    "aishell1_BAC009S0724W0121_zh.wav": 0.5,
    "commonvoice_ja_24511055.wav": 0.37,
    "mls_spanish_13697_11991_000000.wav": 0.205,
    "nst_swedish_se10x016-08071999-1334_u0016002.wav": 0.889,
    "nst_swedish_se10x016-08071999-1334_u0016003.wav": 0.154,
    "nst_swedish_se10x016-08071999-1334_u0016004.wav": 0.368,
    "librivox_simplicissimus_title_de.wav": 0.139,
    "librivox_capitan_veneno_dedication_es.wav": 0.155,
}
MARGIN = 0.12


def post(server: ServerHandle, recording: Clip, endpoint: str = "transcriptions", **fields: str) -> dict:
    with recording.path.open("rb") as f:
        response = httpx.post(
            f"{server.base_url}/v1/audio/{endpoint}",
            files={"file": (recording.name, f, "audio/wav")},
            data={"response_format": "verbose_json", **fields},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("recording", non_english_clips(max_s=120), ids=lambda c: c.language + "-" + c.name[:24])
def test_each_recording_through_the_upload_path(base_server: ServerHandle, recording: Clip) -> None:
    body = post(base_server, recording)
    assert body["language"] == LANGUAGE_NAMES[recording.language]
    assert body["task"] == "transcribe"
    error = error_rate(recording.language, recording.text, body["text"])
    print(f"upload {recording.name}: {error:.3f} {body['text']!r}")
    assert error <= UPLOAD_ERROR[recording.name] + MARGIN, body["text"]


@pytest.fixture(scope="module")
def client(base_server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.mark.parametrize("name", ["mls_spanish", "u0016003"])
def test_openai_client_translates_into_english(client: openai.OpenAI, name: str) -> None:
    from .test_streams import TRANSLATION_SHARE, TRANSLATIONS, content_share

    recording = clip(name)
    with recording.path.open("rb") as f:
        translation = client.audio.translations.create(model="base", file=f, response_format="verbose_json")
    assert translation.language == LANGUAGE_NAMES[recording.language]  # the detected source language
    _, keys = TRANSLATIONS[recording.name]
    assert content_share(translation.text, keys) >= TRANSLATION_SHARE[recording.name], translation.text
    assert not re.search("[åäöñáéíóú]", translation.text.lower()), translation.text
    with recording.path.open("rb") as f:
        plain = client.audio.translations.create(model="base", file=f)
    assert plain.text == translation.text


def test_openai_client_language_lock_and_hints(client: openai.OpenAI) -> None:
    recording = clip("u0016003")  # Swedish
    with recording.path.open("rb") as f:
        locked = client.audio.transcriptions.create(model="base", file=f, language="sv", response_format="verbose_json")
    assert locked.language == "swedish" and error_rate("sv", recording.text, locked.text) <= 0.154 + MARGIN
    with recording.path.open("rb") as f:
        hinted = client.audio.transcriptions.create(
            model="base", file=f, response_format="verbose_json", extra_body={"languages": "en,de"}
        )
    assert hinted.language in ("english", "german")
    with recording.path.open("rb") as f, pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="base", file=f, extra_body={"languages": "en,klingon"})
    assert refused.value.status_code == 400 and "languages" in str(refused.value.body)
