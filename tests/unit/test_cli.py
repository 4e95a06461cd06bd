"""The ``stream-server`` command line as a user meets it first: ``--help``."""

from __future__ import annotations

import subprocess
import sys

from stream_server.config import Settings


def test_serve_help_lists_every_setting() -> None:
    # argparse %-formats help text: one description with "9.4%" in it once made --help crash
    done = subprocess.run(
        [sys.executable, "-m", "stream_server", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "WER 9.4% -> 8.2%" in done.stdout
    for name in Settings.model_fields:
        flag = "--api-key" if name == "api_keys" else "--" + name.replace("_", "-")
        assert flag in done.stdout, flag


def test_unknown_command_is_refused_with_usage() -> None:
    done = subprocess.run([sys.executable, "-m", "stream_server", "serv"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "usage: stream-server serve" in done.stderr


def test_batch_audio_cap_follows_the_device_unless_set() -> None:
    # the cap exists because a CPU encoder's cost grows with the audio in a batch; a GPU's barely does
    default = Settings()
    assert default.resolved_max_batch_audio_s("cpu") == 12.0
    assert default.resolved_max_batch_audio_s("cuda") == 0.0
    for chosen in (0.0, 20.0):
        settings = Settings.from_cli(["--max-batch-audio-s", str(chosen)])
        assert settings.resolved_max_batch_audio_s("cpu") == chosen
        assert settings.resolved_max_batch_audio_s("cuda") == chosen
