"""FAULTS C5 (YAML bombs, huge integers and strings, out-of-range seeds and thread counts) and C6 (values
that pydantic's lax mode would coerce: true for an int, inf for a float, a repeated column): refused with
a ConfigError (exit 2) and a bounded message, quickly; never a crash, a hang or exit 1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lstmcast.config import load_config, read_yaml_mapping, validate_config, yaml_load_bytes
from lstmcast.errors import ConfigError
from lstmcast.safe_yaml import MAX_YAML_BYTES
from lstmcast.training.accel import check_threads, resolve
from tests.conftest import run_cli


def _bomb(levels: int, fan: int = 9) -> str:
    """The classic "billion laughs": each level an anchor holding ``fan`` aliases of the previous one."""
    lines = ["lols:", '  a0: &a0 ["lol"]']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nmodel: {{hidden_size: *a{levels}}}\n"


def _refused_fast(fn, match: str, limit_s: float = 0.5) -> ConfigError:
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match) as info:
        fn()
    assert time.perf_counter() - start < limit_s
    assert len(str(info.value)) < 1000  # bounded, whatever the input's size
    return info.value


# -- C6: coercions refused ------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "match"), [
    ({"model": {"hidden_size": True}}, r"model.hidden_size: a boolean \(true/false\) is not accepted"),
    ({"train": {"lr": True}}, r"train.lr: a boolean"),
    ({"tune": {"batch_size": [32, True]}}, r"tune.batch_size: a boolean"),
    ({"train": {"weight_decay": float("inf")}}, r"train.weight_decay: input should be a finite number, got inf"),
    ({"train": {"lr": "nan"}}, r"train.lr: input should be a finite number"),
    ({"tune": {"lr": [1e-4, float("inf")]}}, r"tune.lr.1: input should be a finite number"),
    ({"data": {"target": ["y", "y"]}}, r"data.target lists \['y'\] more than once"),
    ({"data": {"target": "y", "features": "a,b,a"}}, r"data.features lists \['a'\] more than once"),
])
def test_coercible_values_are_refused_not_coerced(raw, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(raw)


def test_genuine_booleans_and_yaml_style_floats_still_load():
    cfg = validate_config({"model": {"bidirectional": True}, "train": {"lr": "1e-3", "clip_norm": None},
                           "tune": {"residual": [True]}})
    assert cfg.model.bidirectional is True and cfg.train.lr == 1e-3 and cfg.tune.residual == [True]


def test_cli_hidden_size_true_exits_2(tmp_path):
    res = run_cli("train", "--set", "model.hidden_size=true", "--run", str(tmp_path / "run"), timeout=120)
    assert res.returncode == 2, res.stderr
    assert "model.hidden_size: a boolean" in res.stderr and not (tmp_path / "run").exists()


# -- C5: seeds, huge integers, thread counts -------------------------------------------------------------
@pytest.mark.parametrize(("override", "match"), [
    ("train.seed=1e23", r"train.seed: input should be a valid integer, got '1e23'"),
    ("train.seed=1.0e+23", r"train.seed: input should be a valid integer"),
    ("train.seed=-1", r"train.seed: input should be greater than or equal to 0"),
    ("train.seed=9223372036854775808", r"train.seed: integers must lie within"),
    ("train.max_epochs=99999999999999999999", r"train.max_epochs: integers must lie within"),
    ("train.seed=" + "9" * 5000, r"--set train.seed: an integer has more than 4300 digits"),
])
def test_out_of_range_and_huge_integers_are_config_errors(override, match):
    _refused_fast(lambda: load_config(None, [override]), match)


def test_largest_seed_is_accepted():
    assert load_config(None, [f"train.seed={2**63 - 1}"]).train.seed == 2**63 - 1


def test_huge_integer_in_a_yaml_file_is_a_config_error(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(f"train:\n  seed: {'9' * 5000}\n")
    _refused_fast(lambda: read_yaml_mapping(path), r"big.yaml: an integer has more than 4300 digits")


def test_thread_count_beyond_the_cores_names_the_core_count():
    with pytest.raises(ConfigError, match=r"train.threads=100000 but this machine has \d+ cores"):
        resolve("cpu", "fp32", 100000)
    assert check_threads(1) == 1


def test_cli_threads_beyond_the_cores_exits_2_before_training(tmp_path):
    res = run_cli("train", "--set", "train.threads=100000", "--run", str(tmp_path / "run"), timeout=120)
    assert res.returncode == 2, res.stderr
    assert "this machine has" in res.stderr and not (tmp_path / "run").exists()


# -- C5: YAML bombs, huge files, huge echoed values ---------------------------------------------------------
def test_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(levels=9))  # under 1 KB; 9**9 = 387 million values once expanded
    assert path.stat().st_size < 1024
    _refused_fast(lambda: read_yaml_mapping(path), r"expand to \d+ values, over the limit .* alias bomb")


def test_small_alias_bomb_is_refused_too_and_the_message_stays_short(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(_bomb(levels=6))  # 9**6 = 531441 values: main echoed 300 KB of 'lol'
    _refused_fast(lambda: read_yaml_mapping(path), r"alias bomb")


def test_alias_bomb_in_set_and_in_a_run_folder_config_is_refused():
    _refused_fast(lambda: yaml_load_bytes(_bomb(levels=9).encode()), r"alias bomb")
    flow = "[&a0 [lol], " + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)) + "]"
    _refused_fast(lambda: load_config(None, ["tune.batch_size=" + flow]), r"--set tune.batch_size: .*alias bomb")


def test_recursive_alias_and_deep_nesting_are_config_errors(tmp_path):
    path = tmp_path / "rec.yaml"
    path.write_text("model: &m {hidden_size: *m}\n")
    _refused_fast(lambda: read_yaml_mapping(path), r"recursive structure")
    path.write_text("model: " + "[" * 50_000 + "]" * 50_000 + "\n")
    # ~2.4 s on an idle 2-core machine; load can double it
    _refused_fast(lambda: read_yaml_mapping(path), r"nested too deeply", limit_s=15)


def test_harmless_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {hidden_size: 16, num_layers: 2}\nmodel: *b\n")
    raw = read_yaml_mapping(path)
    raw.pop("base")
    assert validate_config(raw).model.hidden_size == 16


def test_oversized_config_file_is_refused_without_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * MAX_YAML_BYTES + "\n")
    _refused_fast(lambda: read_yaml_mapping(path), r"larger than 1000000 bytes")


def test_huge_string_value_is_echoed_truncated(tmp_path):
    # the limit is generous: this is about the message's length; PyYAML scans a 300 KB scalar in ~0.2 s
    err = _refused_fast(lambda: load_config(None, ["model.hidden_size=" + "x" * 300_000]),
                        r"model.hidden_size: input should be a valid integer.*xxx\.\.\.", limit_s=5)
    assert len(str(err)) < 300
    err = _refused_fast(lambda: load_config(None, ["data.id_col=" + "y" * 300_000, "data.target=" + "y" * 300_000]),
                        r"data.id_col 'yyy+\.\.\. is also listed in data.target", limit_s=5)
    assert len(str(err)) < 300
    err = _refused_fast(lambda: load_config(None, ["model." + "z" * 300_000 + "=1"]), r"unknown key 'model.zzz+\.\.\.'",
                        limit_s=5)
    assert len(str(err)) < 300


def test_cli_alias_bomb_exits_2_quickly(tmp_path: Path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(levels=9))
    res = run_cli("train", "-c", str(path), timeout=60)
    assert res.returncode == 2, res.stderr
    assert "alias bomb" in res.stderr and len(res.stderr) < 1000
