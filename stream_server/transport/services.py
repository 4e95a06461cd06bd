"""Everything a route or connection needs, built once by ``create_app`` and stored as ``app.state.services``.

``services(app_or_connection)`` is the typed accessor; nothing else is kept on ``app.state``. The server's
SIGTERM hook drains through ``services(app).registry.drain(grace_s)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from ..auth import ApiKeyAuth, bearer_token
from ..config import Settings
from ..decode.interface import Decoder
from ..decode.types import BatchStats, DecodeJob, DecodeResult
from ..errors import InvalidParameter, Overloaded
from ..metrics import Metrics
from ..session.params import StreamParams
from ..session.policy import SessionPolicy
from .limits import StreamLimits
from .origins import OriginPolicy
from .registry import SessionRegistry
from .session_api import SessionFactory


class DecoderSlot:
    """The app's ``Decoder``: empty until the lifespan attaches the loaded one (the model loads after the app is
    built), so routes hold one stable object. Before that, ``alive`` is False and work is refused as overloaded."""

    def __init__(self, model_id: str) -> None:
        self._decoder: Decoder | None = None
        self._model_id = model_id
        self._busy: Callable[[], bool] = lambda: False

    def attach(self, decoder: Decoder, busy: Callable[[], bool] | None = None) -> None:
        self._decoder = decoder
        if busy is not None:
            self._busy = busy

    def detach(self) -> None:
        self._decoder = None

    def _get(self) -> Decoder:
        if self._decoder is None:
            raise Overloaded("the model is not loaded yet; retry later")
        return self._decoder

    @property
    def model_id(self) -> str:
        return self._decoder.model_id if self._decoder is not None else self._model_id

    @property
    def is_multilingual(self) -> bool:
        return self._decoder.is_multilingual if self._decoder is not None else False

    @property
    def alive(self) -> bool:
        return self._decoder is not None and self._decoder.alive

    @property
    def busy(self) -> bool:
        """A batch is running now (``/v1/status``)."""
        return self._decoder is not None and self._busy()

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        return self._get().submit(job)

    def cancel_owner(self, owner: str) -> int:
        return self._decoder.cancel_owner(owner) if self._decoder is not None else 0

    def stats(self) -> BatchStats:
        return self._get().stats()

    async def tier_status(self) -> dict[str, Any]:
        """What a remote decoder tier reports beyond ``stats`` (each replica's load; the cluster's hop), else {}."""
        report = getattr(self._decoder, "tier_status", None)
        if report is None:
            return {}
        extra: dict[str, Any] = await report()
        return extra


@dataclass(frozen=True)
class Services:
    settings: Settings
    decoder: DecoderSlot
    registry: SessionRegistry
    auth: ApiKeyAuth
    metrics: Metrics
    stream_defaults: StreamParams  # what a client gets for what it does not ask for
    session_policy: SessionPolicy  # the server's streaming policy
    session_factory: SessionFactory
    limits: StreamLimits
    origins: OriginPolicy


def services(where: Starlette | HTTPConnection) -> Services:
    """The app's ``Services`` (from the app, a request or a websocket)."""
    app = where.app if isinstance(where, HTTPConnection) else where
    found = app.state.services
    if not isinstance(found, Services):
        raise TypeError("app.state.services is not set: build the app with create_app")
    return found


def require_api_key(connection: HTTPConnection) -> None:
    """FastAPI dependency for HTTP routes: ``Unauthorized`` (401) unless a configured key is presented. A key in
    the URL is refused whether keys are configured or not (URLs end up in logs)."""
    services(connection).auth.check(bearer_token(connection.headers))
    if "access_token" in connection.query_params:
        raise InvalidParameter(
            "API keys are never accepted in the URL (URLs end up in logs): send 'Authorization: Bearer KEY'",
            param="access_token",
        )
