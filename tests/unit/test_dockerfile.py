"""The few things about the Docker image that can break silently without a Docker engine (none runs here).

Read with a minimal reader (comments dropped, backslash continuations joined): the build argument selects a
stage that exists, what is copied survives the allow-list ``.dockerignore`` and is what ``pip install .``
needs, every ``STREAM_SERVER_*`` variable is a real setting, and the image runs the server as a non-root
user on all interfaces with a health check on ``/healthz`` and glibc's arenas bounded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stream_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` in file order."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def args_of(keyword: str) -> list[str]:
    return [arguments for kw, arguments in instructions() if kw == keyword]


@pytest.mark.parametrize("base", ["cpu", "cuda"])
def test_the_base_build_argument_selects_a_stage_that_exists(base: str) -> None:
    stages = {m.group(1) for a in args_of("FROM") if (m := re.search(r"\bAS\s+(\S+)", a, re.I))}
    final = args_of("FROM")[-1].split()[0]
    assert final == "base-${BASE}" and f"base-{base}" in stages
    assert f"BASE={base}" in " ".join(args_of("ARG")) or base != "cpu"  # cpu is the default


def test_what_is_copied_survives_the_dockerignore_and_is_what_pip_needs() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert ignore[0] == "*"  # an allow-list
    for needed in ("pyproject.toml", "README.md", "stream_server"):
        assert needed in allowed and (ROOT / needed).exists()
    assert any(a.split()[0] == "." for a in args_of("COPY"))
    assert any("pip install --no-cache-dir ." in a for a in args_of("RUN"))


def test_every_stream_server_variable_is_a_real_setting() -> None:
    names = re.findall(r"STREAM_SERVER_([A-Z_]+)=", " ".join(args_of("ENV")))
    assert names, "the image sets no STREAM_SERVER_ variable"
    assert {n.lower() for n in names} <= set(Settings.model_fields)


def test_runs_the_server_as_a_non_root_user_with_a_health_check_and_bounded_arenas() -> None:
    assert args_of("USER")[-1] not in ("root", "0")
    assert json.loads(args_of("CMD")[-1])[:4] == ["stream-server", "serve", "--host", "0.0.0.0"]
    assert "/healthz" in args_of("HEALTHCHECK")[-1]
    # glibc keeps memory freed by ended sessions in per-thread arenas (issue 18 finding 13)
    assert re.search(r"\bMALLOC_ARENA_MAX=2\b", " ".join(args_of("ENV")))
