"""Log hygiene under attack: keys redacted whatever their encoding (finding 5), accept errors rate-limited
(finding 3: 189,503 tracebacks, 85 MB, in under 20 s when the process ran out of file descriptors)."""

from __future__ import annotations

import errno
import logging

import pytest

from stream_server.logs import configure_logging, redact_secrets


@pytest.mark.parametrize(
    "query",
    ["access%5Ftoken=KEY123", "%61ccess_token=KEY123", "ACCESS_TOKEN=KEY123", "api%5fkey=KEY123", "x=1&token=KEY123"],
)
def test_keys_are_redacted_after_percent_decoding_the_name(query: str) -> None:
    line = redact_secrets(f'127.0.0.1:5 - "WebSocket /v1/listen?sample_rate=8000&{query}&b=2" [accepted]')
    assert "KEY123" not in line and "[redacted]" in line and "sample_rate=8000" in line and "b=2" in line


def test_other_parameters_are_left_alone() -> None:
    line = "settings: api_key_file=/k max_upload_bytes=10 keyword=x"
    assert redact_secrets(line) == line


def test_accept_errors_are_logged_once_per_interval_without_tracebacks(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "plain")
    try:
        log = logging.getLogger("asyncio")
        for _ in range(5000):
            try:
                raise OSError(errno.EMFILE, "Too many open files")
            except OSError:
                log.error("socket.accept() out of system resource", exc_info=True)
        log.error("Task exception was never retrieved")  # other asyncio lines stay
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    err = capfd.readouterr().err
    assert err.count("socket.accept() out of system resource") == 1
    assert "Too many open files" in err and "Traceback" not in err
    assert "Task exception was never retrieved" in err
