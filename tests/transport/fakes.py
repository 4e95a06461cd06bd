"""The transport tier's model-free backend: ``decode.fake.FakeBackend`` answering every job with one fixed text
(``hold``/``release`` hold decodes back to build a backlog)."""

from __future__ import annotations

from stream_server.decode.fake import FakeBackend as _FakeBackend


def FakeBackend(text: str = "hello world") -> _FakeBackend:  # noqa: N802 - stands in for the class in tests
    return _FakeBackend(model_id="fake-model", text=lambda job: text)
