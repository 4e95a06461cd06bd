"""``stream-server serve [flags]``: parse settings, print them, run uvicorn with a graceful drain."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .config import Settings
from .logs import configure_logging

log = logging.getLogger("stream_server")


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: stop admitting sessions, let open ones finish their finals, then shut down."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        app = self.config.loaded_app
        # uvicorn wraps the app in middleware; find our FastAPI instance for its registry
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)
        if app is not None:
            for server in self.servers:
                server.close()
            log.info("draining %d open session(s), grace %.0f s", len(app.state.sessions.sessions),
                     self.settings.shutdown_grace_s)
            await app.state.sessions.drain(self.settings.shutdown_grace_s)
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
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=max(settings.max_message_bytes * 2, 1 << 16),
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=log_config,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    DrainingServer(config, settings).run()


if __name__ == "__main__":
    main()
