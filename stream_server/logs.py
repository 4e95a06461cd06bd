"""Log set-up: plain or JSON lines, each carrying the session id (``-`` outside a session)."""

from __future__ import annotations

import json
import logging
import time


class _SessionDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session_id"):
            record.session_id = "-"
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


def configure_logging(level: str, fmt: str) -> dict:
    """Configure the root logger and return a uvicorn ``log_config`` using the same handler."""
    handler = logging.StreamHandler()
    handler.addFilter(_SessionDefault())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(session_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return {"version": 1, "disable_existing_loggers": False,
            "loggers": {"uvicorn": {"level": level.upper()}, "uvicorn.access": {"level": "WARNING"}}}
