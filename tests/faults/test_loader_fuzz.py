"""Fuzz the loaders (issue #4): random, flipped and truncated bytes in every file of a run folder and of a
checkpoint give a CheckpointError or a successful load, never another exception, a crash or a hang.

Each damaged file is tried twice: as is (the sha256 in the manifest catches it) and with the manifest
rewritten to match, so the parsers behind the hash (safetensors header, JSON/YAML, schema, shapes) are
exercised too. A seeded loop keeps it reproducible; SIGALRM turns a hang into a failure.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

import lstmcast
from lstmcast import Forecaster
from lstmcast.errors import CheckpointError
from lstmcast.run.manifest import sha256_bytes
from lstmcast.training import checkpoint as ck
from lstmcast.training.state import restore
from tests.conftest import seasonal_frame, small_config

RUN_FILES = ("config.yaml", "model.safetensors", "scaler.json", "meta.json", "history.json", "manifest.json")
CKPT_FILES = (ck.TENSORS, ck.STATE, ck.MANIFEST)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    run = tmp_path_factory.mktemp("fuzz") / "run"
    fc = Forecaster(small_config(train={"precision": "fp32", "max_epochs": 2, "checkpoint_every": 3})).fit(
        seasonal_frame(300), run_dir=run)
    fc.save(run)
    return run, fc.training_.trainer


def mutations(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    n = len(data)
    out = [("empty", b""), ("random", bytes(rng.getrandbits(8) for _ in range(min(n, 4096)))),
           ("junk_appended", data + b"\x00\xff{[")]
    for _ in range(4):
        cut = rng.randrange(0, max(1, n))
        out.append((f"truncated_{cut}", data[:cut]))
    for i in range(6):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(n) if i % 2 else rng.randrange(min(n, 128))  # the headers matter most
            b[pos] = rng.getrandbits(8)
        out.append((f"flipped_{i}", bytes(b)))
    return out


ODD_VALUES = (None, "x", -1, 0, 10**12, 1.5, float("nan"), [], {}, [1, "a"], True, {"__tensor__": "nope"})


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list) and obj and len(path) < 6:
        for i in (0, len(obj) - 1):
            yield from _leaves(obj[i], (*path, i))
    yield path


def _replace(obj, path, value):
    if not path:
        return None if value is _DROP else value
    node = obj
    for part in path[:-1]:
        node = node[part]
    if value is _DROP and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = None if value is _DROP else value
    return obj


_DROP = object()


def structured_mutations(data: bytes, name: str, rng: random.Random, n: int = 16) -> list[tuple[str, bytes]]:
    """Valid JSON/YAML with odd values at random places: what only the schema and shape checks can catch."""
    import yaml

    yml = name.endswith(".yaml")
    try:
        obj = yaml.safe_load(data) if yml else json.loads(data)
    except ValueError:
        return []
    paths = list(_leaves(obj))
    out = []
    for i in range(n):
        fresh = yaml.safe_load(data) if yml else json.loads(data)
        path = rng.choice(paths)
        value = rng.choice((*ODD_VALUES, _DROP))
        mutated = _replace(fresh, path, value)
        text = yaml.safe_dump(mutated) if yml else json.dumps(mutated)
        out.append((f"odd_{i}_{'.'.join(map(str, path))}", text.encode()))
    if yml:
        out.append(("bad_date", data.replace(b"seed: 0", b"seed: 2024-13-45")))
    return out


def expect_clean(load: Callable[[], object], what: str) -> None:
    def timeout(signum, frame):
        raise TimeoutError(f"loader hung on {what}")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        load()
    except CheckpointError:
        pass
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{what}: {type(exc).__name__}: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _rehash_run(run: Path) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m["sha256"] = {n: sha256_bytes((run / n).read_bytes()) for n in m["sha256"]}
    (run / "manifest.json").write_text(json.dumps(m))


def _rehash_ckpt(folder: Path) -> None:
    m = json.loads((folder / ck.MANIFEST).read_text())
    m["sha256"] = {n: sha256_bytes((folder / n).read_bytes()) for n in (ck.TENSORS, ck.STATE)}
    (folder / ck.MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("name", RUN_FILES)
def test_damaged_run_folder_file_gives_checkpoint_error_never_a_crash(pristine, tmp_path, name):
    src, _ = pristine
    rng = random.Random(f"run-{name}")
    data0 = (src / name).read_bytes()
    for label, data in mutations(data0, rng) + structured_mutations(data0, name, rng):
        for rehashed in (False, True) if name != "manifest.json" else (False,):
            run = tmp_path / f"{label}-{rehashed}"
            shutil.copytree(src, run)
            (run / name).write_bytes(data)
            if rehashed:
                _rehash_run(run)
            expect_clean(lambda run=run: lstmcast.load(run), f"{name} {label} rehashed={rehashed}")
            shutil.rmtree(run)


@pytest.mark.parametrize("name", CKPT_FILES)
def test_damaged_checkpoint_file_gives_checkpoint_error_never_a_crash(pristine, tmp_path, name):
    src, trainer = pristine
    folder_name = ck.CheckpointStore(src).names()[0].name
    rng = random.Random(f"ckpt-{name}")
    data0 = (src / "checkpoints" / folder_name / name).read_bytes()
    for label, data in mutations(data0, rng) + structured_mutations(data0, name, rng, n=40):
        for rehashed in (False, True) if name != ck.MANIFEST else (False,):
            run = tmp_path / f"{label}-{rehashed}"
            shutil.copytree(src, run)
            folder = run / "checkpoints" / folder_name
            (folder / name).write_bytes(data)
            if rehashed:
                _rehash_ckpt(folder)

            def load_and_restore(folder=folder):
                got = ck.read_checkpoint(folder)
                # what the loader let through must also restore cleanly or refuse
                restore(got, trainer.parts, trainer.cfg.lr, trainer.cfg.max_epochs)

            expect_clean(load_and_restore, f"{name} {label} rehashed={rehashed}")
            shutil.rmtree(run)
