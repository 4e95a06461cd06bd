"""``stream-server serve [flags]``: parse settings, print them, run the server (``server.serve``).
``stream-server cluster [--decoders N] [--ingress M] [--address ADDR] [flags]``: the same app as two tiers on
Ray Serve (``cluster/app.py``; needs the cluster extra)."""

from __future__ import annotations

import logging
import sys

from .app import create_app
from .config import Settings
from .logs import configure_logging
from .models import ModelError
from .server import serve

log = logging.getLogger("stream_server")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "cluster":
        _cluster(argv[1:])
        return
    if argv and argv[0] == "serve":
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        sys.exit(f"unknown command {argv[0]!r}; usage: stream-server serve|cluster [flags] (see --help)")
    settings = Settings.from_cli(argv)
    log_config = configure_logging(settings.log_level, settings.log_format)
    log.info("settings: %s", settings.describe())
    try:
        settings.resolved_model_path()  # joins and verifies --model base before anything starts
    except ModelError as error:
        sys.exit(f"stream-server: {error}")
    serve(settings, create_app, log_config)


def _cluster(argv: list[str]) -> None:
    try:
        from .cluster.app import run
    except ImportError as error:  # ray is an optional extra
        sys.exit(f"stream-server cluster needs Ray Serve: pip install -e '.[cluster]' ({error})")
    run(argv)


if __name__ == "__main__":
    main()
