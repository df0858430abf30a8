"""`lstmcast serve` as a process: a tampered run or an open address without a token never starts (exit 4 / 2, no
port opened); SIGTERM while requests are in flight answers them all and exits 0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("starlette")

ROOT = Path(__file__).resolve().parents[2]


def _serve(run: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lstmcast", "serve", str(run), "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env=env)


def _tamper(serve_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(serve_run, run)
    blob = bytearray((run / "model.safetensors").read_bytes())
    blob[-8:] = b"\x7f" * 8  # weights edited after training, the manifest's hash left as it was
    (run / "model.safetensors").write_bytes(bytes(blob))
    return run


def test_a_tampered_run_is_refused_before_serving(serve_run, tmp_path):
    from lstmcast.errors import CheckpointError
    from lstmcast.serve.engine import Engine

    with pytest.raises(CheckpointError, match="model.safetensors") as exc:
        Engine(_tamper(serve_run, tmp_path))
    assert exc.value.exit_code == 4


@pytest.mark.slow
def test_a_tampered_run_refuses_to_start_with_exit_4(serve_run, tmp_path):
    proc = _serve(_tamper(serve_run, tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "CheckpointError" in err and "model.safetensors" in err and "serving" not in err


def test_an_open_address_without_a_token_is_refused_with_exit_2(serve_run):
    env = {k: v for k, v in os.environ.items() if k != "LSTMCAST_SERVE_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "lstmcast", "serve", str(serve_run), "--host", "0.0.0.0",
                             "--port", "0"], stderr=subprocess.PIPE, text=True,
                            env={**env, "PYTHONPATH": str(ROOT / "src")})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "bearer token is required" in err and "--token-file" in err


def _started(proc: subprocess.Popen) -> str:
    line = proc.stderr.readline()
    assert " on http://" in line, line + proc.stderr.read()
    url = line.split(" on ")[1].split()[0]
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return url
        except OSError:
            time.sleep(0.1)
    raise AssertionError("never ready")


@pytest.mark.slow
def test_sigterm_during_requests_answers_them_and_exits_0(serve_run):
    proc = _serve(serve_run, "--max-wait-ms", "400")  # requests wait in the queue when SIGTERM comes
    try:
        url = _started(proc)
        frame = pd.read_csv(serve_run.parent / "series.csv").iloc[-30:]
        body = json.dumps({"rows": [{"time": t, "y": float(y)} for t, y in zip(frame["time"], frame["y"])]})
        results: list[int] = []

        def post() -> None:
            req = urllib.request.Request(url + "/v1/forecast", body.encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                results.append(resp.status)
        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.15)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc.wait(timeout=60) == 0
        assert results == [200] * 6
    finally:
        if proc.poll() is None:
            proc.kill()
