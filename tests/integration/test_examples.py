"""Every script in examples/ runs as it is (issue 22 item 9), from a fresh working folder: what it prints
and writes is checked, not only its exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


def run_example(name: str, cwd) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, cwd=cwd,
                         env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_every_example_is_listed_and_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(CHECKS)
    listed = (EXAMPLES / "README.md").read_text()
    assert all(f"examples/{s}" in listed for s in scripts)


def _single_series(out: str, cwd) -> None:
    assert "'MASE'" in out and "seasonal_naive" in out
    assert (cwd / "runs" / "example-co2" / "report.html").is_file()


def _long_table(out: str, cwd) -> None:
    assert all(f"'s{k}'" in out for k in range(1, 5))  # MASE per store
    assert "s5" in out  # the new store's forecast


def _future(out: str, cwd) -> None:
    assert "'MASE'" in out and "2024-04-29 00:00:00" in out  # the forecast starts after the data


def _intervals(out: str, cwd) -> None:
    assert "80% interval coverage over" in out and "load_lo_95" in out and "coverage_80" in out


def _tuning(out: str, cwd) -> None:
    assert "[3 of 3]" in out and "best:" in out and (cwd / "runs" / "example-tune" / "best.yaml").is_file()


def _onnx(out: str, cwd) -> None:
    import numpy as np

    lines = {ln.split(":")[0]: ln for ln in out.splitlines()}
    def values(key):
        return np.array([float(v) for v in lines[key].split("[")[1].rstrip("]").split()])
    np.testing.assert_allclose(values("onnxruntime"), values("lstmcast"), atol=0.02)  # printed to 2 decimals


CHECKS = {"single_series.py": _single_series, "long_table.py": _long_table, "future_covariates.py": _future,
          "intervals.py": _intervals, "tuning.py": _tuning, "onnx_deploy.py": _onnx}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_as_it_is(name, tmp_path):
    if name == "onnx_deploy.py":
        pytest.importorskip("onnxruntime")
    CHECKS[name](run_example(name, tmp_path), tmp_path)
