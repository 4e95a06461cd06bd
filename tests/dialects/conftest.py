"""Fixtures of the dialects' end-to-end tests: one keyed server for the module set, and the protocol v1 result
on the same recording as the baseline every dialect's WER is compared with."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ..conftest import ServerHandle, start_server_with_keys
from ..helpers import stream_audio, to_pcm16
from .e2e import API_KEY, TWILIO_TOKEN, two_sentences_16k


@pytest.fixture(scope="session")
def dialect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server_with_keys(
        tmp_path_factory.mktemp("dialect-server"),
        [API_KEY],
        twilio_auth_token=TWILIO_TOKEN,
        twilio_webhook_prefixes="http://127.0.0.1:",
        idle_timeout_s=20,
        # every final decoded alike whatever the load (the machine is shared): WER compares dialects, not load
        final_beam_size=5,
        late_final_beam_size=5,
        extras_max_load=1000,
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def native_text(dialect_server: ServerHandle) -> str:
    """Protocol v1's transcript of the two-sentence recording (same endpointing as the dialects' tests)."""
    result = asyncio.run(
        stream_audio(
            dialect_server.ws_url,
            to_pcm16(two_sentences_16k()),
            bytes_per_second=4 * 32000,  # 0.1 s of 16 kHz audio every 25 ms, as the dialects' tests send
            chunk_s=0.025,
            params={"endpointing_ms": "500"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    )
    return result.text()
