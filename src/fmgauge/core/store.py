"""The run directory: ``config.yaml``, ``trials.sqlite``, ``results.parquet``, ``summary.json``, ``figures/``.

``trials.sqlite`` is the source of truth. A trial's result rows are committed in the same transaction that marks
it done, so a killed study loses at most the trials that were running, and a restart skips every finished one.
Only the driver process writes to it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fmgauge.core.files import read_back
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
LOCK = ".lock"
REBUILD = ("it is rebuilt from the run's trial store (trials.sqlite) by rerunning the command that made the run "
           "with the same --out: finished trials are reused, not recomputed.")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,          -- done | failed
    seconds REAL,
    finished_at REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS results (
    trial_id TEXT NOT NULL,
    row TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_trial ON results(trial_id);
"""


class RunStore:
    """Read and write one run directory."""

    def __init__(self, root: str | Path, *, lock: bool = True) -> None:
        """Open (creating) the run directory ``root``; with ``lock`` (the default) take its lock FIRST, so a run
        refused because another one holds the directory writes nothing into it. The lock is released by
        :meth:`close` (or at process exit)."""
        self.root = Path(root)
        self._locked = False
        if lock:
            acquire_lock(self.root)  # before anything is created or written
            self._locked = True
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (NotADirectoryError, FileExistsError):
            self._release()
            raise FmgaugeError(f"run directory {self.root} is a file (or lies under one); give a directory.") from None
        except PermissionError:
            self._release()
            raise FmgaugeError(f"run directory {self.root} is not writable; give a directory you can write to.") \
                from None
        path = self.root / "trials.sqlite"
        try:
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM trials").fetchone()
        except sqlite3.DatabaseError as e:
            self._release()
            raise FmgaugeError(f"{path} is not a readable trial store ({e}); move it away to start this run over, "
                               "or restore it from a backup.") from None
        (self.root / "figures").mkdir(exist_ok=True)

    def _release(self) -> None:
        if self._locked:
            self._locked = False
            release_lock(self.root)

    # ---------------------------------------------------------------- config / summary
    def save_config(self, config: dict[str, Any]) -> None:
        (self.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def load_config(self) -> dict[str, Any]:
        path = self.root / "config.yaml"
        if not path.exists():
            raise FmgaugeError(f"{self.root} is not a run directory: it has no config.yaml.")

        def read(p: Path) -> dict[str, Any]:
            data = yaml.safe_load(p.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a mapping, got {type(data).__name__}")
            return data

        return read_back(path, read, what="run config", fix="restore it, or start the run over in a new --out.")

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.root / name
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # atomic: a killed run never leaves half a file
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
        os.replace(tmp, path)
        return path

    def read_json(self, name: str, *, fix: str = REBUILD) -> Any:
        """A JSON file of the run, with a corrupt or partial one named (and ``fix``: how to rebuild it)."""
        return read_back(self.root / name, lambda p: json.loads(p.read_text()), fix=fix)

    def read_parquet(self, name: str, *, fix: str = REBUILD) -> pd.DataFrame:
        """A Parquet table of the run (``results.parquet``, ...), a corrupt or partial one named with ``fix``."""
        return read_back(self.root / name, pd.read_parquet, fix=fix)

    # ---------------------------------------------------------------- trials
    def done_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM trials WHERE status='done'")}

    def record(self, trial_id: str, config: dict, rows: list[dict], seconds: float) -> None:
        """Commit a finished trial and its rows atomically."""
        with self._db:
            self._db.execute("DELETE FROM results WHERE trial_id=?", (trial_id,))
            self._db.executemany(
                "INSERT INTO results(trial_id, row) VALUES (?, ?)",
                [(trial_id, json.dumps(r, default=_json_default)) for r in rows],
            )
            self._db.execute(
                "INSERT OR REPLACE INTO trials(id, config, status, seconds, finished_at, error) "
                "VALUES (?, ?, 'done', ?, ?, NULL)",
                (trial_id, json.dumps(config, sort_keys=True), seconds, time.time()),
            )

    def record_failure(self, trial_id: str, config: dict, error: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO trials(id, config, status, seconds, finished_at, error) "
                "VALUES (?, ?, 'failed', NULL, ?, ?)",
                (trial_id, json.dumps(config, sort_keys=True), time.time(), error),
            )

    def trial_table(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT id, status, seconds, finished_at, error FROM trials", self._db)

    def results(self, trial_ids: set[str] | None = None) -> pd.DataFrame:
        """All result rows of finished trials (restricted to ``trial_ids`` if given), one row per record."""
        q = "SELECT r.trial_id, r.row FROM results r JOIN trials t ON t.id=r.trial_id WHERE t.status='done'"
        recs = []
        for tid, row in self._db.execute(q):
            if trial_ids is None or tid in trial_ids:
                recs.append({"trial_id": tid, **json.loads(row)})
        return pd.DataFrame.from_records(recs)

    def write_results(self, df: pd.DataFrame) -> Path:
        path = self.root / "results.parquet"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        self._db.close()
        self._release()


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's live process
        return True
    return True


# Locks this process holds: resolved run directory -> (re-entry count, whether taking it created the directory)
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.Lock()


def _key(root: Path) -> Path:
    return root.expanduser().resolve()


def acquire_lock(root: str | Path) -> None:
    """Take ``<root>/.lock`` (pid, host, start time) before anything is written into ``root``; re-entrant.

    A directory held by another live process is refused (nothing is written: the refused run leaves every byte
    as it was) with the holder's pid and start time; a lock left by a dead process on this host is taken over with
    a warning. ``root`` is created if missing (and removed again on release if nothing else was written to it).
    Pair with :func:`release_lock`, or use :func:`run_lock`.
    """
    root = Path(root)
    key = _key(root)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][0] += 1
            return
        created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise FmgaugeError(f"run directory {root} is a file (or lies under one); give a directory.") from None
        except PermissionError:
            raise FmgaugeError(f"run directory {root} cannot be created (permission denied); give a directory you "
                               "can write to.") from None
        path = root / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    held = json.loads(path.read_text() or "{}")
                except (OSError, ValueError):
                    held = {}
                if not isinstance(held, dict):
                    held = {}
                if held.get("pid") == me["pid"] and held.get("host") == me["host"]:
                    _HELD[key] = [1, False, True]  # this pid's (a pid reused after a crash is this process's too)
                    return
                if held.get("host") == me["host"] and held.get("pid") and not _alive(int(held["pid"])):
                    log.warning("taking over the lock of %s left by pid %s (not running), started %s", root,
                                held.get("pid"), held.get("started"))
                    path.unlink(missing_ok=True)
                    continue
                raise FmgaugeError(
                    f"run directory {root} is in use by pid {held.get('pid', '?')} on {held.get('host', '?')} since "
                    f"{held.get('started', '?')}; wait for it to finish, or give another --out. (Delete {path} only "
                    "if that process is gone.)") from None
            except PermissionError:
                raise FmgaugeError(f"run directory {root} is not writable; give a directory you can write to.") \
                    from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            _HELD[key] = [1, created, True]
            return


def release_lock(root: str | Path) -> None:
    """Undo one :func:`acquire_lock`; the last release removes the lock (and the directory if taking the lock
    created it and nothing was written since)."""
    key = _key(Path(root))
    with _HELD_GUARD:
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] > 0:
            return
        del _HELD[key]
        _drop(key, created=entry[1], owned=entry[2])


def _drop(key: Path, *, created: bool, owned: bool) -> None:
    path = key / LOCK
    if owned:
        try:
            held = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            held = {}
        if isinstance(held, dict) and held.get("pid") == os.getpid():
            path.unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            key.rmdir()  # only succeeds when empty: a refused or failed run leaves no empty directory


@atexit.register
def _release_all() -> None:  # a run that stopped on an error still frees its directory
    with _HELD_GUARD:
        for key, entry in list(_HELD.items()):
            _drop(key, created=entry[1], owned=entry[2])
        _HELD.clear()


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[None]:
    """Hold ``<root>/.lock`` while a run writes into ``root`` (see :func:`acquire_lock`); re-entrant."""
    acquire_lock(root)
    try:
        yield
    finally:
        release_lock(root)
