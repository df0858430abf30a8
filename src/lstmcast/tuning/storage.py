"""Where a study lives and how several workers share it without losing or duplicating trials.

- Storage: a SQLite file in the tuning folder by default (embedded, nothing to start); any SQLAlchemy
  URL (``postgresql://...``) lets workers on several machines share one study. Heartbeats are on, so
  a trial whose worker died on another machine is failed after ``3 * tune.heartbeat_s`` seconds.
- Worker slots: each worker holds an exclusive ``flock`` on ``DIR/workers/slot-K.lock`` (the lowest
  free K) for its lifetime. Held locks count the live workers of this machine (the default thread
  share is cores // live workers) and tell at once whether a RUNNING trial's owner on this machine is
  gone (U1): the kernel drops the lock when a process dies, even by SIGKILL.
- Claim lock: counting the trials and asking for a new one happen under one lock (a file lock next to
  a SQLite file, ``pg_advisory_lock`` on PostgreSQL, ``GET_LOCK`` on MySQL), so N workers create
  exactly the asked number of trials (U2).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import socket
import sqlite3
import threading
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

log = logging.getLogger(__name__)
HOST = socket.gethostname()


@contextlib.contextmanager
def quiet_optuna_warnings() -> Iterator[None]:
    """Heartbeats with ask/tell are what lstmcast means to use; optuna flags them experimental."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
        yield


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'study.db').resolve()}"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 where only that driver is installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is reported by open_storage
        return url.split("@")[-1]


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def open_storage(url: str, heartbeat_s: int) -> RDBStorage:
    """An optuna RDBStorage with heartbeats; WAL journal and a long lock timeout for SQLite."""
    from optuna.storages import RDBStorage

    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _open_sqlite_file(path)
        engine_kwargs["creator"] = lambda: _sqlite_connect(path)
    try:
        with quiet_optuna_warnings():
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                              grace_period=3 * heartbeat_s)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types for a bad URL or server
        raise _storage_error(url, exc) from None


_DAMAGED = ("file is not a database", "malformed", "disk image")  # what SQLite says of a file it cannot read
RESULTS = ("best.yaml", "trials.csv", "summary.json")  # what results.py writes into the tuning folder


def _open_sqlite_file(path: Path) -> None:
    """Set WAL (readers do not block the writer; persists in the file) on a study file that is a sound SQLite
    database, or a new one. A directory or device in its place is a ConfigError (exit 2); a damaged file
    (truncated, overwritten) a CheckpointError naming it (exit 4), never exit 1 or a new study over it."""
    if (path.exists() or path.is_symlink()) and not path.is_file():
        what = "a directory" if path.is_dir() else "a dangling symlink" if not path.exists() else "not a regular file"
        raise ConfigError(f"study storage {path} is {what}, not a SQLite file: move it away, or tune into another "
                          "--run (or give --storage)")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as con:
            con.execute("PRAGMA journal_mode=WAL")
            check = [row[0] for row in con.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        if not any(word in str(exc) for word in _DAMAGED):
            raise ConfigError(f"study storage {path}: SQLite cannot open it ({str(exc)[:120]}): check its "
                              "permissions and the disk, or tune into another --run") from None
        check = [str(exc)]
    if check != ["ok"]:
        raise CheckpointError(f"study storage {path} is damaged (SQLite: {'; '.join(check)[:160]}): its trials "
                              "cannot be read. Restore it from a backup, or move it away (the study's best.yaml, "
                              "trials.csv and summary.json stay) and tune into another --run")


def refuse_lost_study(path: Path | None, run_dir: Path) -> None:
    """A 0-byte study file next to a study's results: the storage was lost (truncated), and SQLite would
    silently start a new, empty study whose results replace the old ones. Refused (CheckpointError)."""
    if path is None or not path.is_file() or path.stat().st_size:
        return
    results = [name for name in RESULTS if (run_dir / name).exists()]
    if results:
        raise CheckpointError(f"study storage {path} is empty (0 bytes) but {run_dir} holds the results of a study "
                              f"({', '.join(results)}): its trials are lost. Restore study.db from a backup, or "
                              "tune into another --run (a new study here would replace those results)")



def _storage_error(url: str, exc: Exception) -> ConfigError:
    if isinstance(exc, ImportError):
        return ConfigError(f"--storage {redact(url)}: the database driver is not installed ({exc}); for "
                           "PostgreSQL: pip install psycopg2-binary (lstmcast[postgres]) and write "
                           "postgresql+psycopg2://..., or pip install psycopg for postgresql+psycopg://")
    first = (str(exc).splitlines() or [""])[0]
    return ConfigError(f"--storage {redact(url)}: cannot open the study storage ({type(exc).__name__}: {first}); "
                       "check the URL, that the server runs and accepts this user")


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    """WAL with synchronous=NORMAL: a commit is not fsynced (a killed process loses nothing; a power cut may
    lose the last commits, never the file's consistency), which makes optuna's many small commits cheap."""
    con = sqlite3.connect(path, timeout=60, check_same_thread=False)
    con.execute("PRAGMA synchronous=NORMAL")
    return con


class WorkerSlot:
    """This process's exclusive slot among the tuning workers that share ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder) / "workers"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex[:12]
        self.slot, self._fd = self._acquire()
        self.worker_id = f"{HOST}/{self.slot}/{self.token}"

    def _acquire(self) -> tuple[int, int]:
        k = 0
        while True:
            fd = os.open(self.folder / f"slot-{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                k += 1
                continue
            os.ftruncate(fd, 0)
            os.write(fd, self.token.encode())
            os.fsync(fd)
            return k, fd

    def _held(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a probe lock we may have taken
        return False

    def live_workers(self) -> int:
        """Workers holding a slot in this folder now (this one included)."""
        return max(1, sum(self._held(p) for p in self.folder.glob("slot-*.lock")))

    def owner_alive(self, worker_id: str) -> bool | None:
        """True/False for a worker of this machine and folder; None where this machine cannot tell."""
        host, _, rest = worker_id.partition("/")
        slot, _, token = rest.partition("/")
        if host != HOST or not slot.isdigit():
            return None
        path = self.folder / f"slot-{slot}.lock"
        if not self._held(path):
            return False
        try:
            return path.read_text() == token
        except OSError:
            return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1


@contextlib.contextmanager
def claim_lock(url: str, study_name: str) -> Iterator[None]:
    """Serialise "count the trials, then ask for one" across every worker of the study."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.claim.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
        return
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect not in ("postgresql", "mysql", "mariadb"):
        log.warning("no cross-worker lock for %s storage: with several workers the study may run a few "
                    "trials more than asked", dialect)
        yield
        return
    with _db_lock(url, dialect, study_name):
        yield


@contextlib.contextmanager
def _db_lock(url: str, dialect: str, study_name: str) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = zlib.crc32(f"lstmcast-tune:{study_name}".encode())
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        con = engine.connect()
    except Exception as exc:  # noqa: BLE001 - driver missing, bad URL, server down: all the user's to fix
        raise _storage_error(url, exc) from None
    try:
        with con:
            if dialect == "postgresql":
                con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
            else:
                con.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 600)"), {"k": str(key)})
                unlock = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
            try:
                yield
            finally:
                con.execute(unlock, {"k": key if dialect == "postgresql" else str(key)})
    finally:
        engine.dispose()


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds from a daemon thread while it runs."""

    def __init__(self, storage: RDBStorage, trial: optuna.Trial, interval: float):
        self.storage, self.interval = storage, interval
        self.trial_id = trial._trial_id  # optuna's own heartbeat thread uses the same id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lstmcast-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the trial
                log.warning("heartbeat of trial id %d failed: %s", self.trial_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
