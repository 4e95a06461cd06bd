"""In-process apps on a fake backend: ``create_app(settings, FakeBackend())`` driven by Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from stream_server.app import create_app
from stream_server.config import Settings

from ..helpers import silence, synthesize, to_pcm16
from .fakes import FakeBackend

AppFactory = Callable[..., tuple[TestClient, FakeBackend]]


@pytest.fixture
def make_client() -> Iterator[AppFactory]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> tuple[TestClient, FakeBackend]:
        backend = FakeBackend()
        client = TestClient(create_app(Settings(**overrides), backend))
        client.__enter__()
        clients.append(client)
        return client, backend

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()[0]


@pytest.fixture(scope="session")
def speech_pcm() -> bytes:
    """About two seconds of espeak-ng speech then a second of silence, 16 kHz s16le."""
    try:
        audio = synthesize("hello there this is a test of the stream")
    except RuntimeError as exc:  # espeak-ng missing
        pytest.skip(f"espeak-ng is needed for speech: {exc}")
    return to_pcm16(np.concatenate([audio, silence(1.0)]))
