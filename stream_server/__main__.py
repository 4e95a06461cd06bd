"""``stream-server serve [flags]``: parse settings, print them, run uvicorn with a graceful drain."""

from __future__ import annotations

import logging
import socket
import sys
import time

import uvicorn
from fastapi import FastAPI

from .app import create_app
from .config import Settings
from .logs import configure_logging
from .transport.services import services

log = logging.getLogger("stream_server")


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: stop accepting connections, finalize every open session (its finals and
    ``session.closed`` with ``server_shutdown`` delivered), then let uvicorn close what is left; the whole
    shutdown stays within ``shutdown_grace_s`` (plus the decode batch running at its end)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        started = time.monotonic()
        for server in self.servers:
            server.close()  # no new connections while the open sessions finish
        registry = services(self.app).registry
        log.info("draining %d open session(s), grace %g s", len(registry.sessions), self.grace_s)
        unfinished = await registry.drain(self.grace_s)
        if unfinished:
            log.warning("%d session(s) still open after the grace period; closing them", unfinished)
        # what is left of the grace goes to uvicorn's own wait for connections and tasks
        self.config.timeout_graceful_shutdown = max(0.5, self.grace_s - (time.monotonic() - started))  # type: ignore[assignment]
        await super().shutdown(sockets=sockets)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        sys.exit(f"unknown command {argv[0]!r}; usage: stream-server serve [flags] (see --help)")
    settings = Settings.from_cli(argv)
    log_config = configure_logging(settings.log_level, settings.log_format)
    log.info("settings: %s", settings.describe())
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        # up to twice the limit reaches the session, which answers message_too_large; beyond, the websocket
        # layer closes with 1009 before buffering more
        ws_max_size=max(settings.max_message_bytes * 2, 1 << 16),
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=log_config,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    DrainingServer(config, app, settings.shutdown_grace_s).run()


if __name__ == "__main__":
    main()
