"""API keys: none configured means open; otherwise every request names one key, compared in constant time."""

from __future__ import annotations

import hmac

from .errors import Unauthorized


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
        if token is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer KEY' (browsers: subprotocol bearer.KEY)")
        candidate = token.encode()
        matched = False
        for key in self._keys:  # no early exit: time does not depend on which key matched
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise Unauthorized("invalid API key")
