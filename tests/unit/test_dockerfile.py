"""What can be checked about the Docker image without a Docker engine.

No engine runs on the development or CI machines, so these tests read the Dockerfile with a small parser that
follows Docker's rules for the parts the file uses (parser directives, comments, backslash continuations,
exec-form JSON, ``--flag=value`` options, ``ARG`` substitution in ``FROM``) and check:

- it parses, and ``--build-arg BASE=cpu|cuda`` each select a stage that exists;
- everything it copies exists and survives the ``.dockerignore`` (and the package build's own inputs do);
- the ``pip install`` it runs installs what the README's install command installs;
- HEALTHCHECK (which really answers a health endpoint, tried here against a throwaway HTTP server), EXPOSE,
  a non-root USER, and the ``stream-server serve --host 0.0.0.0`` command;
- every ``STREAM_SERVER_*`` variable the Dockerfile or README sets is a real setting;
- the ``.dockerignore`` keeps out ``.venv``, ``.git``, tests, benchmarks and build junk.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stream_server.config import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"

KNOWN_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


# --------------------------------------------------------------------------------------------- the parser


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # after the keyword, continuations joined
    line: int  # where it starts, 1-based
    flags: dict[str, str] = field(default_factory=dict)  # leading --name=value options

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array form (``CMD ["a", "b"]``), or None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    base: str  # image reference as written, before substitution
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        matches = [s for s in self.stages if s.name == name]
        assert matches, f"no stage named {name!r}"
        return matches[0]

    def chain(self, build_args: dict[str, str]) -> list[Stage]:
        """The final stage and the stages it is built FROM, final first."""
        values = {**self.global_args, **build_args}
        stages = [self.stages[-1]]
        while True:
            base = substitute(stages[-1].base, values)
            named = [s for s in self.stages if s.name == base]
            if not named:
                return stages
            stages.append(named[0])


def substitute(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"${name} used but not declared as an ARG"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, text)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions as single lines: parser directives and comments dropped, continuations joined."""
    lines = text.splitlines()
    index = 0
    # Parser directives: `# name=value` lines before anything else.
    while index < len(lines) and re.match(r"#\s*\w+\s*=", lines[index]):
        directive = lines[index].lstrip("#").split("=", 1)[0].strip().lower()
        assert directive in {"syntax", "escape", "check"}, f"unknown parser directive {directive!r}"
        assert directive != "escape", "only the default escape character is understood here"
        index += 1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines[index:], start=index + 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and empty lines are dropped, also inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        yield start, " ".join(pending)
        pending = []
    assert not pending, f"line {start}: continuation runs off the end of the file"


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, arguments = content.partition(" ")
        keyword = keyword.upper()
        assert keyword in KNOWN_INSTRUCTIONS, f"line {line}: unknown instruction {keyword}"
        assert arguments.strip(), f"line {line}: {keyword} without arguments"
        flags: dict[str, str] = {}
        while keyword in {"ADD", "COPY", "FROM", "HEALTHCHECK", "RUN"} and arguments.startswith("--"):
            option, _, arguments = arguments.partition(" ")
            name, _, value = option[2:].partition("=")
            flags[name] = value
            arguments = arguments.lstrip()
        instruction = Instruction(keyword, arguments, line, flags)
        if keyword == "FROM":
            words = arguments.split()
            assert len(words) in (1, 3) and (len(words) == 1 or words[1].upper() == "AS"), f"line {line}: {content}"
            stages.append(Stage(base=words[0], name=words[2] if len(words) == 3 else None))
        elif not stages:
            assert keyword == "ARG", f"line {line}: only ARG may come before the first FROM"
            name, _, default = arguments.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(instruction)
        # exec_form raises on malformed JSON; SHELL has no shell form.
        if keyword in {"CMD", "ENTRYPOINT", "SHELL"} and instruction.exec_form is None:
            assert keyword != "SHELL", f"line {line}: SHELL takes a JSON array"
    assert stages, "no FROM"
    return Dockerfile(global_args, stages)


def env_assignments(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        for word in shlex.split(instruction.arguments):
            name, equals, value = word.partition("=")
            assert equals, f"line {instruction.line}: use ENV NAME=value"
            values[name] = value
    return values


# ------------------------------------------------------------------------------------- .dockerignore rules


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per line, in order; Docker's Go filepath.Match syntax plus `**`."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# ------------------------------------------------------------------------------------------ the README


def readme_text() -> str:
    assert README.exists(), "README.md is missing: it must show the install, docker build and docker run"
    return README.read_text()


def shell_commands(markdown: str, program: str) -> list[list[str]]:
    """Commands in the README's code blocks that run `program`, split into words, `&&` chains split up."""
    commands = []
    blocks = re.findall(r"```[^\n]*\n(.*?)```", markdown, flags=re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part, comments=True)
                if words and Path(words[0]).name == program:
                    commands.append(words)
    return commands


def pip_install_targets(words: list[str]) -> list[str]:
    """What a `pip install` command installs, with options that change how but not what dropped."""
    assert "install" in words, words
    targets = []
    for word in words[words.index("install") + 1 :]:
        if word in {"-e", "--editable", "--no-cache-dir", "-q", "--quiet", "-U", "--upgrade"}:
            continue
        assert not word.startswith("-"), f"unexpected pip option {word} in {words}"
        targets.append(word)
    return targets


# ----------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_parser_follows_docker_rules_on_a_small_example() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "ARG FLAVOUR=a\n"
        "FROM scratch AS base-a\n"
        "RUN echo one \\\n"
        "    # a comment inside a continuation is dropped\n"
        "    two\n"
        'CMD ["x", "--y"]\n'
        "FROM base-${FLAVOUR}\n"
        "COPY --chown=app:app src /dst\n"
    )
    assert parsed.global_args == {"FLAVOUR": "a"}
    run = parsed.stage("base-a").all("RUN")[0]
    assert run.arguments == "echo one two" and run.line == 4
    assert parsed.stage("base-a").all("CMD")[0].exec_form == ["x", "--y"]
    copy = parsed.stages[-1].all("COPY")[0]
    assert copy.flags == {"chown": "app:app"} and copy.arguments == "src /dst"
    assert [s.name for s in parsed.chain({})] == [None, "base-a"]
    with pytest.raises(AssertionError):
        parse_dockerfile("FROM scratch\nRUNN echo\n")
    with pytest.raises(AssertionError):
        parse_dockerfile("FROM scratch\nRUN echo \\\n")
    with pytest.raises(json.JSONDecodeError):
        parse_dockerfile('FROM scratch\nCMD ["unterminated"\n')


@pytest.mark.parametrize("base", ["cpu", "cuda"])
def test_base_build_argument_selects_an_existing_stage(dockerfile: Dockerfile, base: str) -> None:
    chain = dockerfile.chain({"BASE": base})
    assert len(chain) == 2, "the final stage must be built FROM one of the base stages"
    assert chain[1].name == f"base-{base}"


def test_cpu_is_the_default_and_slim(dockerfile: Dockerfile) -> None:
    assert dockerfile.global_args.get("BASE") == "cpu"
    assert re.fullmatch(r"python:3\.1\d-slim(-\w+)?", dockerfile.stage("base-cpu").base)


def test_cuda_base_has_cuda12_and_cudnn9_and_selects_the_gpu(dockerfile: Dockerfile) -> None:
    cuda = dockerfile.stage("base-cuda")
    # CTranslate2 4.x wheels are built against CUDA 12 and cuDNN 9; nvidia's "-cudnn-" tags for CUDA >= 12.3
    # carry cuDNN 9 (older tags spelt "-cudnn8-").
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", cuda.base)
    assert match, cuda.base
    assert (int(match.group(1)), int(match.group(2))) >= (12, 3)
    assert env_assignments(cuda.all("ENV"))["STREAM_SERVER_DEVICE"] == "cuda"
    assert env_assignments(dockerfile.stage("base-cpu").all("ENV"))["STREAM_SERVER_DEVICE"] == "cpu"


def test_every_stream_server_variable_is_a_real_setting(dockerfile: Dockerfile) -> None:
    variables: set[str] = set()
    for stage in dockerfile.stages:
        variables |= set(env_assignments(stage.all("ENV")))
    variables |= set(re.findall(r"STREAM_SERVER_\w+", DOCKERFILE.read_text()))
    variables |= set(re.findall(r"STREAM_SERVER_\w+", readme_text()))
    ours = {v for v in variables if v.startswith("STREAM_SERVER_")}
    assert ours, "the Dockerfile should set STREAM_SERVER_DEVICE"
    for variable in sorted(ours):
        assert variable.removeprefix("STREAM_SERVER_").lower() in Settings.model_fields, variable


def test_every_copied_file_exists_and_is_in_the_build_context(dockerfile: Dockerfile) -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    copies = [i for s in dockerfile.stages for i in s.all("COPY") + s.all("ADD")]
    assert copies, "the image needs the project's files"
    for instruction in copies:
        if "from" in instruction.flags:
            continue  # copies from another stage or image, not from the build context
        *sources, _destination = instruction.exec_form or shlex.split(instruction.arguments)
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"line {instruction.line}: {source} does not exist"
            relative = os.path.normpath(source)
            if relative != ".":
                assert not ignored(relative, rules), f"line {instruction.line}: .dockerignore drops {source}"


def test_build_context_holds_what_pip_install_needs() -> None:
    """`pip install .` reads pyproject.toml, its readme and the packages it lists: all must pass .dockerignore."""
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"]]
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        needed += [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "stream_server" / "static").iterdir()]
    assert "stream_server/static/index.html" in needed
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not ignored(path, rules), f".dockerignore drops {path}, which the package build needs"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "tests/integration/test_browser.py",
        "benchmarks/results/latency.json",
        "stream_server/__pycache__/app.cpython-311.pyc",
        "stream_server/decode/__pycache__/engine.cpython-311.pyc",
        "stream_server.egg-info/PKG-INFO",
        "build/lib/stream_server/app.py",
        "dist/stream_server-0.1.0.tar.gz",
        ".pytest_cache/v/cache/lastfailed",
        "stream-server-browser.png",
    ],
)
def test_dockerignore_keeps_junk_out(path: str) -> None:
    assert ignored(path, dockerignore_rules(DOCKERIGNORE.read_text())), path


def test_pip_install_is_the_readmes(dockerfile: Dockerfile) -> None:
    readme_installs = shell_commands(readme_text(), "pip")
    assert readme_installs, "README.md shows no pip install command"
    readme_targets = pip_install_targets(readme_installs[0])

    runs = [i for s in dockerfile.chain({}) for i in s.all("RUN")]
    docker_installs = [
        words
        for run in runs
        for part in run.arguments.split("&&")
        if (words := shlex.split(part)) and Path(words[0]).name == "pip" and "install" in words
    ]
    assert len(docker_installs) == 1, docker_installs
    assert pip_install_targets(docker_installs[0]) == readme_targets == ["."]
    assert "--no-cache-dir" in docker_installs[0], "keep pip's download cache out of the image"


def test_readme_docker_commands_match_the_dockerfile(dockerfile: Dockerfile) -> None:
    commands = shell_commands(readme_text(), "docker")
    builds = [words for words in commands if words[1] == "build"]
    assert len(builds) >= 2, "README must show the CPU and the CUDA build"
    build_args = {words[i + 1] for words in builds for i, word in enumerate(words[:-1]) if word == "--build-arg"}
    assert "BASE=cuda" in build_args, "README must show the CUDA build (--build-arg BASE=cuda)"
    for assignment in build_args:
        name, _, value = assignment.partition("=")
        assert name in dockerfile.global_args, f"README passes {name}, which the Dockerfile does not declare"
        assert [s.name for s in dockerfile.chain({name: value})][-1] == f"base-{value}"
    runs = [words for words in commands if words[1] == "run"]
    assert any("--gpus" in " ".join(words) for words in runs), "README must show running the CUDA image"
    assert any("STREAM_SERVER_MODEL=" in " ".join(words) for words in runs), "README must show mounting a model"
    assert any("8000:8000" in " ".join(words) for words in runs)


def test_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    users = [i.arguments.split(":")[0].strip() for i in dockerfile.stages[-1].all("USER")]
    assert users, "the final stage needs a USER"
    assert users[-1] not in {"root", "0"}


def test_exposes_8000_and_serves_on_all_interfaces(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    assert "8000" in {port.split("/")[0] for i in final.all("EXPOSE") for port in i.arguments.split()}
    command = final.all("CMD")[-1].exec_form
    assert command is not None and command[:2] == ["stream-server", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_asks_healthz(dockerfile: Dockerfile, status: int, healthy: bool) -> None:
    healthchecks = dockerfile.stages[-1].all("HEALTHCHECK")
    assert len(healthchecks) == 1
    check = healthchecks[0]
    assert check.flags.keys() >= {"interval", "timeout", "start-period"}
    form, _, command = check.arguments.partition(" ")
    assert form == "CMD"
    argv = json.loads(command)
    assert argv[0] == "python", "slim images have no curl: the check uses the venv's Python"

    handler = type("Handler", (_HealthHandler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "STREAM_SERVER_PORT": str(server.server_address[1])}
        result = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()
