"""The documentation that is generated or copied stays true: the settings tables and the README's commands."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_configuration_tables_are_what_the_generator_writes() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    generator = page.split("```python\n", 1)[1].split("```", 1)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(generator, "docs/configuration.md", "exec"), {"__name__": "generator"})  # noqa: S102
    start = page.index("\n### ")
    tables = page[start : page.index("\n## ", start)]
    assert tables.strip() == out.getvalue().strip(), "run the generator at the end of docs/configuration.md"


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", readme)
    assert len(commands) == 2, commands  # install-and-serve, then the tests
    assert "stream-server serve" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
