"""Config typos answered by synonym as well as spelling, --levels / --missing flags, --debug on either side of
the subcommand, and a missing data file refused before torch is imported (issue 22 items 6 and 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lstmcast.cli import hoist_global_flags
from lstmcast.cli_options import build_config, with_flags
from lstmcast.config import ForecastConfig, all_keys, apply_overrides, validate_config
from lstmcast.config_checks import suggest_key
from lstmcast.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.parametrize("typed, meant", [
    ("train.learning_rate", "train.lr"), ("train.epochs", "train.max_epochs"),
    ("model.hidden_dim", "model.hidden_size"), ("model.quantiles", "model.levels"),
    ("data.fillna", "data.missing"), ("data.unique_id", "data.id_col"),
    ("model.hiden_size", "model.hidden_size"),  # spelling still works
    ("train.levels", "model.levels")])  # a key in the wrong section finds its own
def test_suggestion_by_synonym_then_spelling(typed, meant):
    assert suggest_key(typed, all_keys(ForecastConfig)) == f" (did you mean '{meant}'?)"


def test_yaml_and_set_typos_suggest_the_synonym():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.learning_rate' \(did you mean 'train\.lr'\?\)"):
        validate_config({"train": {"learning_rate": 0.01}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.learning_rate' in --set \(did you mean 'train\.lr'"):
        apply_overrides({}, ["train.learning_rate=0.01"])


def test_levels_and_missing_flags_set_the_config(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("time,y\n2024-01-01,1\n")
    cfg = build_config(None, str(data), "time", "y", None, None, None, None, None,
                       with_flags("80,95", "interpolate", []))
    assert cfg.model.levels == [80, 95]
    assert cfg.data.missing == "interpolate"
    later = build_config(None, str(data), "time", "y", None, None, None, None, None,
                         with_flags("80", None, ["model.levels=[90]"]))
    assert later.model.levels == [90]  # --set comes after the flags: it wins


def test_global_flags_after_the_subcommand():
    assert hoist_global_flags(["train", "--data", "x.csv", "--debug", "-v"]) == ["--debug", "-v", "train", "--data",
                                                                                  "x.csv"]
    assert hoist_global_flags(["train", "--", "--debug"]) == ["train", "--", "--debug"]


def test_missing_data_file_refused_before_torch_and_debug_after_the_subcommand(tmp_path):
    code = ("import sys\nfrom lstmcast.cli import main\nsys.argv = ['lstmcast', 'train', '--data', 'nope.csv', "
            "'--debug']\ntry:\n    main()\nexcept BaseException as exc:\n    print(type(exc).__name__)\n"
            "print('torch' in sys.modules, 'pandas' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, timeout=300)
    assert res.stdout.split() == ["DataError", "False", "False"], res.stdout + res.stderr  # --debug: raised as is


@pytest.mark.parametrize("debug, shown", [(False, "WARNING: a column is constant"),
                                          (True, "WARNING lstmcast.data.validate: a column is constant")])
def test_warnings_name_their_logger_only_with_debug(tmp_path, debug, shown):
    code = ("import logging\nfrom lstmcast.cli import _main\n"
            f"_main(debug={debug}, verbose=False)\n"
            "logging.getLogger('lstmcast.data.validate').warning('a column is constant')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.stderr.strip() == shown
