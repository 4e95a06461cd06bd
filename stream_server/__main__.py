"""``stream-server serve [flags]``: parse settings, print them, run the server (``server.serve``)."""

from __future__ import annotations

import logging
import sys

from .app import create_app
from .config import Settings
from .logs import configure_logging
from .server import serve

log = logging.getLogger("stream_server")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        sys.exit(f"unknown command {argv[0]!r}; usage: stream-server serve [flags] (see --help)")
    settings = Settings.from_cli(argv)
    log_config = configure_logging(settings.log_level, settings.log_format)
    log.info("settings: %s", settings.describe())
    serve(settings, create_app, log_config)


if __name__ == "__main__":
    main()
