"""Every script in benchmarks/ runs in its ``--smoke`` form, so none can rot unnoticed (`make bench` crashed with a
ShapeError after the calendar channels arrived). The convention: each benchmarks/*.py not starting with ``_``
accepts ``--smoke`` (a tiny run of every section); CI runs this file with the slow tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_run(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "LSTMCAST_CACHE_DIR": "off"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "Traceback" not in res.stderr


def test_every_benchmark_declares_smoke():
    """The fast half of the convention: a new benchmark without --smoke fails the default suite."""
    for script in SCRIPTS:
        assert '"--smoke"' in (ROOT / "benchmarks" / script).read_text(encoding="utf-8"), script
