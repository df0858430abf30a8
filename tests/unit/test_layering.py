"""The package layering of docs/ARCHITECTURE.md holds: import-linter's contracts in pyproject.toml are kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: `make test` installs import-linter with the dev extra")
    return subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    res = _lint_imports()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout
    assert res.stdout.count("KEPT") >= 3  # every contract ran


def test_importing_the_cli_loads_neither_torch_nor_pandas():
    """`lstmcast --help` stays fast: the CLI module imports the library's heavy parts inside its commands only."""
    code = "import sys, lstmcast.cli; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_the_contracts_catch_an_upward_import(tmp_path):
    """A contract that could never fail proves nothing: an upward import (data -> forecaster) breaks it."""
    import importlinter  # noqa: F401  (the same package the CLI runs)

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "lstmcast", src / "lstmcast")
    (src / "lstmcast" / "data" / "upward.py").write_text("from lstmcast.forecaster import Forecaster\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    res = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)})
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and "lstmcast.data.upward" in res.stdout
