"""API keys: checking, where a key is read from, key files, and that settings and logs never show a key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stream_server.auth import ApiKeyAuth, bearer_token, websocket_credentials
from stream_server.config import Settings
from stream_server.errors import Unauthorized
from stream_server.logs import configure_logging


def test_no_keys_means_open() -> None:
    auth = ApiKeyAuth(frozenset())
    assert not auth.enabled
    auth.check(None)
    auth.check("anything")


@pytest.mark.parametrize("token", [None, "", "wrong", "key-one ", "KEY-ONE", "key-on", "key-one-and-more"])
def test_anything_but_a_configured_key_is_refused(token: str | None) -> None:
    auth = ApiKeyAuth(frozenset({"key-one", "key-two"}))
    with pytest.raises(Unauthorized) as refused:
        auth.check(token)
    assert refused.value.http_status == 401 and refused.value.code == "invalid_api_key"
    assert refused.value.close_code == 1008
    if token:
        assert token not in refused.value.message


def test_every_configured_key_is_accepted() -> None:
    auth = ApiKeyAuth(frozenset({"key-one", "key-two", "ключ"}))
    for key in ("key-one", "key-two", "ключ"):
        auth.check(key)


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        ("abc", None),
    ],
)
def test_bearer_header_parsing(header: str, expected: str | None) -> None:
    assert bearer_token({"authorization": header} if header else {}) == expected


def test_websocket_credentials_header_first_then_subprotocol() -> None:
    assert websocket_credentials({"authorization": "Bearer h"}, ["bearer.s"]) == ("h", None)
    assert websocket_credentials({}, ["chat", "bearer.s"]) == ("s", "bearer.s")
    assert websocket_credentials({}, ["chat"]) == (None, None)
    assert websocket_credentials({}, []) == (None, None)


def test_keys_from_flags_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# operators\nfrom-file\n\n  spaced  \n")
    settings = Settings.from_cli(["--api-key", "flag-one", "--api-key", "flag-two", "--api-key-file", str(key_file)])
    assert settings.all_api_keys() == {"flag-one", "flag-two", "from-file", "spaced"}
    monkeypatch.setenv("STREAM_SERVER_API_KEYS", '["from-env"]')
    assert Settings().all_api_keys() == {"from-env"}
    assert Settings(api_keys=[""]).all_api_keys() == frozenset()  # an empty key never opens the door


def test_settings_summary_counts_keys_and_never_prints_them(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("secret-from-file\n")
    summary = Settings(api_keys=["secret-flag"], api_key_file=str(key_file)).describe()
    assert "secret" not in summary.replace(str(key_file), "")
    assert "api_keys=2 configured" in summary


def test_logs_redact_a_key_put_in_a_query_string(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "plain")
    try:
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:1", "/v1/listen?sample_rate=8000&access_token=hunter2&x=1"
        )
        logging.getLogger("stream_server").info("prompt_max_tokens=200 api_key_file=/k token=abc")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    err = capfd.readouterr().err
    assert "hunter2" not in err and "access_token=[redacted]&x=1" in err
    assert "sample_rate=8000" in err and "prompt_max_tokens=200 api_key_file=/k token=[redacted]" in err
