"""Many languages through the OpenAI-compatible upload path on the real ``base`` model and real speech, raw HTTP
and the official ``openai`` client: the detected language in ``verbose_json``, hints, the lock, translation."""

from __future__ import annotations

import httpx
import pytest

from stream_server.transport.formats import LANGUAGE_NAMES

from ..conftest import ServerHandle
from .conftest import Clip, error_rate, needs_extra, non_english_clips

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
