"""`lstmcast tune` end to end: a small study, best.yaml that trains, and two workers on one study (U2)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml

from lstmcast.tuning.storage import normalize_url
from tests.conftest import run_cli, seasonal_frame

# tiny data and models: each trial trains a few epochs of a few steps
TINY = ["--time-col", "time", "--target", "y", "--horizon", "6", "--season", "24",
        "--set", "tune.window_periods=[1,2]", "--set", "tune.hidden_size=[4,12]", "--set", "tune.num_layers=[1,2]",
        "--set", "tune.batch_size=[32,64]", "--set", "train.max_steps_per_epoch=4", "--threads", "1"]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _install_postgres() -> str | None:
    """Debian's server package, installed when missing (root only); returns why not, or None."""
    if _pg_bin("initdb") and _pg_bin("pg_ctl"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL is not installed and this user cannot apt-get install it"
    subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
    res = subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if res.returncode != 0 or not _pg_bin("initdb"):
        return f"apt-get install postgresql failed: {res.stderr.strip()[-300:]}"
    return None


def _as_server_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user there."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a loopback port under a temp dir, stopped at the end."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is missing: pip install psycopg2-binary")
    why = _install_postgres()
    if why:
        pytest.skip(why)
    root = tempfile.mkdtemp(prefix="lstmcast-pg-")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = os.path.join(root, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run(_as_server_user([_pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_server_user([_pg_bin("pg_ctl"), "-D", data, "-l", os.path.join(root, "log"), "-w",
                                        "-o", f"-p {port} -k {root} -h 127.0.0.1", "start"]),
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, KeyError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL server: {exc}")
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"  # the plain scheme: lstmcast picks the driver
    subprocess.run(_as_server_user([_pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"]),
                   capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "s.csv"
    seasonal_frame(300).to_csv(path, index=False)
    return path


def _tune_args(csv: Path, run: Path, trials: int, epochs: int, *extra: str) -> list[str]:
    return ["tune", "--data", str(csv), *TINY, "--trials", str(trials), "--run", str(run),
            "--set", f"tune.max_epochs={epochs}", *extra]


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="lstmcast", storage=normalize_url(url)).get_trials()


@pytest.mark.slow
def test_small_study_writes_results_and_best_yaml_trains(tiny_csv, tmp_path):
    run = tmp_path / "tune"
    res = run_cli(*_tune_args(tiny_csv, run, 3, 2), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.index("search space") < out.index("trial 0:")  # the space is printed before the first trial
    assert "only where num_layers > 1" in out and "best trials" in out
    for name in ("best.yaml", "trials.csv", "summary.json", "history.png", "importances.png"):
        assert (run / name).stat().st_size > 0, name
    assert len((run / "trials.csv").read_text().splitlines()) == 1 + 3
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["data"]["path"] == str(tiny_csv) and best["data"]["window"] in (24, 48)
    assert (best["model"]["num_layers"] > 1) or best["model"]["dropout"] == 0.0
    trained = run_cli("train", "-c", str(run / "best.yaml"), "--run", str(tmp_path / "best"),
                      "--set", "train.max_epochs=1", cwd=Path("/"))
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "best" / "model.safetensors").exists()


def _two_workers(csv: Path, run: Path, trials: int, *extra: str) -> None:
    args = _tune_args(csv, run, trials, 6, *extra)
    procs = [subprocess.Popen([sys.executable, "-m", "lstmcast.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err


def _assert_exactly(trials: list[optuna.trial.FrozenTrial], n: int) -> None:
    assert sorted(t.number for t in trials) == list(range(n))  # none lost, none duplicated
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_run_exactly_the_asked_trials(tiny_csv, tmp_path):
    run = tmp_path / "tune"
    _two_workers(tiny_csv, run, 5)
    _assert_exactly(_trials(f"sqlite:///{run / 'study.db'}"), 5)
    assert len((run / "trials.csv").read_text().splitlines()) == 1 + 5


@pytest.mark.slow
def test_two_workers_on_one_postgresql_study(tiny_csv, tmp_path, postgres_url):
    _two_workers(tiny_csv, tmp_path / "tune", 4, "--storage", postgres_url)
    _assert_exactly(_trials(postgres_url), 4)
