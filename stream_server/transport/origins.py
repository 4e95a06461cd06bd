"""Which browser origins may use the server (``--allowed-origins``): a page on another site must not open a
session from a visitor's browser on a server without keys.

Only browsers send ``Origin``; a request without one (any non-browser client) is allowed. By default the server's
own origin (the ``Host`` the request came to) and localhost are allowed; ``*`` allows every origin; otherwise the
listed origins (``https://captions.example.com``) are. The same rule answers CORS preflights for the HTTP API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..errors import OriginNotAllowed

LOCALHOST = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$")


class OriginPolicy:
    def __init__(self, allowed: str) -> None:
        entries = [entry.strip().rstrip("/").lower() for entry in allowed.split(",") if entry.strip()]
        self.allow_all = "*" in entries
        self.listed = frozenset(entry for entry in entries if entry != "*")

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.allow_all:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.listed or LOCALHOST.match(origin):
            return True
        return bool(host) and urlsplit(origin).netloc == (host or "").strip().lower()

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise ``OriginNotAllowed`` for a browser request from an origin this server does not serve."""
        origin = headers.get("origin")
        if not self.allows(origin, headers.get("host")):
            raise OriginNotAllowed(
                f"origin {origin!r} may not use this server; the operator can allow it with --allowed-origins"
            )

    def cors_origins(self) -> tuple[list[str], str]:
        """(allow_origins, allow_origin_regex) for Starlette's CORS middleware."""
        return (["*"] if self.allow_all else sorted(self.listed)), LOCALHOST.pattern
