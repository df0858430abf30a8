"""README's quick start can be pasted (issue 22 item 9): the files it names ship with the repository, every
flag it passes exists on its command, and the demo run it names is the one `make demo` writes."""

from __future__ import annotations

import re
import shlex

from typer.testing import CliRunner

from lstmcast.cli import app
from tests.conftest import ROOT


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Quick start"):text.index("Exit codes:")]


def _commands() -> list[list[str]]:
    block = _quick_start().split("```")[1].replace("\\\n", " ")
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.startswith("lstmcast ")]


def test_the_files_the_quick_start_and_examples_use_ship_with_the_repository():
    paths = set(re.findall(r"examples/[\w./-]+\.(?:csv|py|md)", _quick_start()))
    assert paths and all((ROOT / p).is_file() for p in paths), paths


def test_every_flag_of_the_quick_start_exists_on_its_command():
    commands = _commands()
    assert {c[1] for c in commands} >= {"train", "evaluate", "predict", "report", "tune", "export", "doctor"}
    runner = CliRunner()
    for cmd in commands:
        help_text = runner.invoke(app, [cmd[1], "--help"], terminal_width=200).output
        for flag in (a for a in cmd[2:] if a.startswith("--") or a == "-c"):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), (cmd[1], flag)


def test_the_demo_run_named_in_the_readme_is_the_one_make_demo_writes():
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    assert "runs/demo-latest" in _quick_start()
    assert re.search(r"ln -sfn \$\(notdir \$\(RUN\)\) runs/demo-latest", makefile)
    assert not re.search(r"runs/demo(?![-\w])", readme)  # no `runs/demo` folder that nothing writes
