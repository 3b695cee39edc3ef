"""The run directory: ``config.yaml``, ``trials.sqlite``, ``results.parquet``, ``summary.json``, ``figures/``.

``trials.sqlite`` is the source of truth. A trial's result rows are committed in the same transaction that marks
it done, so a killed study loses at most the trials that were running, and a restart skips every finished one.
Only the driver process writes to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
LOCK = ".lock"

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

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "figures").mkdir(exist_ok=True)
        path = self.root / "trials.sqlite"
        try:
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM trials").fetchone()
        except sqlite3.DatabaseError as e:
            raise FmgaugeError(f"{path} is not a readable trial store ({e}); move it away to start this run over, "
                               "or restore it from a backup.") from None

    # ---------------------------------------------------------------- config / summary
    def save_config(self, config: dict[str, Any]) -> None:
        (self.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def load_config(self) -> dict[str, Any]:
        path = self.root / "config.yaml"
        if not path.exists():
            raise FmgaugeError(f"{self.root} is not a run directory: it has no config.yaml.")
        return yaml.safe_load(path.read_text())

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.root / name
        path.write_text(json.dumps(obj, indent=2, default=_json_default))
        return path

    def read_json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

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
        df.to_parquet(path, index=False)
        return path

    def close(self) -> None:
        self._db.close()


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


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[None]:
    """Hold ``<root>/.lock`` (pid, host, start time) while a run writes into ``root``.

    A second run on a held directory is refused with the holder's pid and start time; a lock left by a dead process
    on this host is taken over with a warning. Re-entrant within one process.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
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
            if held.get("pid") == me["pid"] and held.get("host") == me["host"]:
                yield  # this process holds it already
                return
            if held.get("host") == me["host"] and held.get("pid") and not _alive(int(held["pid"])):
                log.warning("taking over the lock of %s left by pid %s (not running), started %s", root,
                            held.get("pid"), held.get("started"))
                path.unlink(missing_ok=True)
                continue
            raise FmgaugeError(
                f"run directory {root} is in use by pid {held.get('pid', '?')} on {held.get('host', '?')} since "
                f"{held.get('started', '?')}; wait for it to finish, or give another --out. (Delete {path} only if "
                "that process is gone.)") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
