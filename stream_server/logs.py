"""Log set-up: plain or JSON lines, each carrying the session id (``-`` outside a session).

The session id comes from a context variable that the websocket route sets for the task serving a session,
so every line logged while serving it carries the id: our own, uvicorn's handshake lines, and those of
tasks the session starts (they inherit the context). ``LoggerAdapter(extra={"session_id": ...})`` still wins
where a line is logged from outside that context.

API keys are never logged: settings print a count, and the one place a key could slip into a line, a
query string someone stuffed it into (``?access_token=...``), is redacted here, also when the name is
percent-encoded (``?access%5Ftoken=``, ``?%61ccess_token=``): a parameter is matched on its decoded name.

Accept errors (``EMFILE`` when the process runs out of file descriptors) are logged by asyncio with a
traceback on every retry; at most one such line per ``ACCEPT_ERROR_INTERVAL_S`` is kept, with a count of
those dropped.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from typing import Any
from urllib.parse import unquote_plus

session_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")

_SECRET_NAMES = frozenset({"access_token", "api_key", "apikey", "key", "token", "auth", "authorization"})
# a query parameter: its name (maybe percent-encoded) after ? or & (or a word start), "=", its value
_URL_PARAMETER = re.compile(r"(?<![\w%])([\w.%+-]{1,64})=([^&\s\"']+)")
ACCEPT_ERROR_INTERVAL_S = 10.0


def redact_secrets(message: str) -> str:
    """``message`` with the value of every key-like parameter replaced, matched on the decoded name."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if unquote_plus(name).lower() in _SECRET_NAMES:
            return f"{name}=[redacted]"
        return match.group(0)

    return _URL_PARAMETER.sub(replace, message)


class _SessionAndRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session_id"):
            record.session_id = session_id_var.get()
        message = record.getMessage()
        if "=" in message:
            redacted = redact_secrets(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


class _ClientFaultsWithoutTracebacks(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 text frame with a full traceback at ERROR; it is the client's
    fault, answered with close 1007: one warning line is enough (and a flood of them stays small)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error" and str(record.msg).startswith("Invalid UTF-8 sequence"):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _RateLimitedAcceptErrors(logging.Filter):
    """asyncio logs every failed ``accept()`` (out of file descriptors) with a traceback, thousands a
    second under a connection flood: keep one line per interval, without the traceback."""

    def __init__(self, interval_s: float = ACCEPT_ERROR_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last_logged = -float("inf")
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "asyncio" or "accept" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last_logged < self.interval_s:
            self.suppressed += 1
            return False
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = f"{record.getMessage()}: {exc} ({self.suppressed} similar lines dropped)"
        record.args, record.exc_info, record.exc_text = None, None, None
        self._last_logged, self.suppressed = now, 0
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "session_id": getattr(record, "session_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> dict[str, Any]:
    """Configure the root logger and return a uvicorn ``log_config`` using the same handler."""
    handler = logging.StreamHandler()
    handler.addFilter(_SessionAndRedaction())
    handler.addFilter(_ClientFaultsWithoutTracebacks())
    handler.addFilter(_RateLimitedAcceptErrors())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(session_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {"uvicorn": {"level": level.upper()}, "uvicorn.access": {"level": "WARNING"}},
    }
