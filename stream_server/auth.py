"""API keys: none configured means open; otherwise every request names one key, compared in constant time.

Where a key may travel: ``Authorization: Bearer KEY`` on HTTP and on the websocket handshake, or (browsers,
which cannot set headers on a websocket) the ``Sec-WebSocket-Protocol`` value ``bearer.KEY``. Never in the
URL: query strings end up in access logs and browser history.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from .errors import Unauthorized

SUBPROTOCOL_PREFIX = "bearer."


class ApiKeyAuth:
    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, token: str | None) -> None:
        """Raise ``Unauthorized`` unless ``token`` is one of the keys. Never logs the token."""
        if not self._keys:
            return
        if not token:
            raise Unauthorized("missing API key: send 'Authorization: Bearer KEY' (browsers: subprotocol bearer.KEY)")
        candidate = token.encode()
        matched = False
        for key in self._keys:  # no early exit: time does not depend on which key matched
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise Unauthorized("invalid API key")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (scheme case-insensitive), else ``None``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def websocket_credentials(headers: Mapping[str, str], subprotocols: Iterable[str]) -> tuple[str | None, str | None]:
    """(token, subprotocol to accept): the header wins; else the first offered ``bearer.KEY`` subprotocol,
    which the server must echo for a browser to complete the handshake."""
    token = bearer_token(headers)
    if token is not None:
        return token, None
    for proto in subprotocols:
        if proto.startswith(SUBPROTOCOL_PREFIX):
            return proto[len(SUBPROTOCOL_PREFIX) :], proto
    return None, None
