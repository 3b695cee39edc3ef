"""Run trials through a backend and commit each one to the run store as it finishes.

A trial is a pure function of its JSON-serialisable config (seeded): ``fn(config) -> list[dict]`` of result rows,
where ``fn`` is a module-level function (so worker processes and Ray can import it). Its id is a hash of the
config, so a restarted study recognises finished trials and skips them.

Backends: ``local`` (default; ``workers=1`` runs in this process, more uses a spawn process pool with one thread
per worker) and ``ray`` (``address=None`` starts a local Ray instance; ``"auto"`` or ``"ray://host:port"`` joins a
cluster). Both give identical results: each trial is seeded by its own config.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from fmgauge.core.cache import stable_hash
from fmgauge.core.progress import progress as progress_tracker
from fmgauge.core.store import RunStore, run_lock
from fmgauge.core.validation import FmgaugeError, check_choice

log = logging.getLogger(__name__)
TrialFn = Callable[[dict], list[dict]]


@dataclass(frozen=True)
class Trial:
    config: dict[str, Any]
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", stable_hash(self.config))


@dataclass
class RunStats:
    total: int
    skipped: int
    ran: int
    failed: int
    seconds: float

    @property
    def trials_per_minute(self) -> float:
        return 60 * self.ran / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**self.__dict__, "trials_per_minute": self.trials_per_minute}


@dataclass(frozen=True)
class BackendConfig:
    """Where trials run."""

    backend: str = "local"  # local | ray
    workers: int | None = None  # local: processes (default: CPU count); ray: ignored (cluster decides)
    address: str | None = None  # ray: None starts a local instance; "auto" or "ray://host:port" joins one
    threads_per_worker: int = 1  # torch/BLAS threads inside each worker

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, ["local", "ray"])
        if self.workers is not None and self.workers < 1:
            raise FmgaugeError(f"workers must be >= 1, got {self.workers}.")


def _timed_call(fn: TrialFn, config: dict, threads: int | None) -> tuple[list[dict], float]:
    if threads:
        _set_threads(threads)
    t0 = time.perf_counter()
    rows = fn(config)
    return rows, time.perf_counter() - t0


def _init_worker(progress_mode: str) -> None:
    """Start a pool worker: its progress lines (a trial's training steps, a model load) follow the parent's mode.

    With the parent logging progress (``log``: nohup, CI, a pipe), the worker logs its own plain timestamped lines
    to the inherited stderr, so a long trial shows its steps, loss and ETA in the log; with a bar on a terminal
    (or progress off) the parent's bar counts the trials and workers stay quiet.
    """
    _ignore_sigint()
    os.environ["FMGAUGE_PROGRESS"] = progress_mode if progress_mode == "log" else "off"
    if progress_mode == "log" and not logging.getLogger().handlers:
        import sys

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])


def _set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def run_trials(
    trials: Sequence[Trial],
    fn: TrialFn,
    store: RunStore,
    *,
    backend: BackendConfig | None = None,
    description: str = "trials",
    progress: bool = True,
) -> RunStats:
    """Run the trials not yet done in ``store``, committing each as it finishes; returns counts and timing.

    Failed trials are recorded with their traceback (in the store; the log gets one line each) and the others go
    on; afterwards one error summarises them. A trial that fails on its input (:data:`INPUT_ERRORS`: an
    :class:`FmgaugeError`, or a file that disappeared or cannot be read mid-run) would fail the same way in every
    trial, so it stops the run at once with that error's message; finished trials stay saved.
    """
    backend = backend or BackendConfig()
    ids = [t.id for t in trials]
    if len(set(ids)) != len(ids):
        raise FmgaugeError("two trials have the same config (and id); make every trial's config distinct.")
    with run_lock(store.root):  # one writer per run directory
        try:
            return _execute(trials, fn, store, backend, description, progress)
        except KeyboardInterrupt:
            saved = len(store.done_ids() & set(ids))
            raise Interrupted(f"interrupted; {saved} of {len(trials)} trials are saved in {store.root}; rerun the "
                              "same command to resume.") from None


INPUT_ERRORS = (FmgaugeError, FileNotFoundError, PermissionError, IsADirectoryError)


def _input_error(t: Trial, e: BaseException) -> FmgaugeError:
    what = str(e) if isinstance(e, FmgaugeError) else f"{type(e).__name__}: {e}"
    return FmgaugeError(f"trial {t.id} stopped the run: {what} Finished trials are saved; fix the input and rerun the "
                        "same command to resume.")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the message says how many trials are saved and how to resume."""


def _execute(trials: Sequence[Trial], fn: TrialFn, store: RunStore, backend: BackendConfig, description: str,
             progress: bool) -> RunStats:
    done = store.done_ids()
    todo = [t for t in trials if t.id not in done]
    t0 = time.perf_counter()
    failures: list[tuple[Trial, str]] = []
    with progress_tracker(description, total=len(todo), unit="trial", enabled=progress and bool(todo)) as bar:
        if len(todo) < len(trials):
            log.info("%s: %d of %d trials already saved; running the other %d", description,
                     len(trials) - len(todo), len(trials), len(todo))

        def on_done(t: Trial, rows: list[dict] | None, secs: float, err: str | None, fatal: bool = False) -> None:
            if err is None:
                store.record(t.id, t.config, rows or [], secs)
            elif fatal:  # the caller raises the input error itself
                store.record_failure(t.id, t.config, err)
            else:
                store.record_failure(t.id, t.config, err)
                failures.append((t, err))
                log.error("trial %s failed: %s (traceback saved in %s)", t.id, err.strip().splitlines()[-1],
                          store.root / "trials.sqlite")
            bar.advance(1)

        if todo:
            if backend.backend == "ray":
                _run_ray(todo, fn, backend, on_done)
            elif (backend.workers or os.cpu_count() or 1) == 1 or len(todo) == 1:
                for t in todo:
                    try:
                        rows, secs = _timed_call(fn, t.config, None)
                        on_done(t, rows, secs, None)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except INPUT_ERRORS as e:
                        on_done(t, None, 0.0, traceback.format_exc(), fatal=True)
                        raise _input_error(t, e) from None
                    except Exception:
                        on_done(t, None, 0.0, traceback.format_exc())
            else:
                _run_pool(todo, fn, backend, on_done, bar.mode)
    stats = RunStats(len(trials), len(trials) - len(todo), len(todo) - len(failures), len(failures),
                     time.perf_counter() - t0)
    if failures:
        t, err = failures[0]
        last = err.strip().splitlines()[-1]
        raise FmgaugeError(
            f"{len(failures)} of {len(todo)} trials failed (finished ones are saved; re-run to retry). "
            f"First failure, trial {t.id} {t.config}: {last}"
        )
    return stats


def _run_pool(todo: list[Trial], fn: TrialFn, backend: BackendConfig, on_done, progress_mode: str = "off") -> None:
    workers = min(backend.workers or os.cpu_count() or 1, len(todo))
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(progress_mode,)) as pool:
        with _sigint_ignored_while_spawning():  # workers start with SIGINT ignored: none can print a traceback
            pending = {pool.submit(_timed_call, fn, t.config, backend.threads_per_worker): t for t in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    t = pending.pop(fut)
                    try:
                        rows, secs = fut.result()
                        on_done(t, rows, secs, None)
                    except BrokenProcessPool as e:
                        raise FmgaugeError(
                            "a worker process died (out of memory, or a script without an "
                            "`if __name__ == '__main__':` guard re-running itself in the spawned workers). "
                            "Finished trials are saved; fix the cause and re-run, or use workers=1."
                        ) from e
                    except INPUT_ERRORS as e:
                        on_done(t, None, 0.0, traceback.format_exc(), fatal=True)
                        raise _input_error(t, e) from None
                    except Exception:
                        on_done(t, None, 0.0, traceback.format_exc())
        except BaseException:
            if isinstance(sys.exc_info()[1], Exception):
                for fut in pending:
                    fut.cancel()
            else:  # Ctrl-C: stop the running trials now (they rerun)
                # No future is cancelled here: the pool's manager thread marks every pending one broken once the
                # workers are gone, and on Python 3.11 it raises InvalidStateError (a traceback) on a cancelled one.
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False)
            raise


@contextlib.contextmanager
def _sigint_ignored_while_spawning():
    """Ignore SIGINT in this process while the pool spawns its workers (submit starts them).

    An ignored signal stays ignored across exec, and Python installs no KeyboardInterrupt handler for a signal it
    starts with ignored, so a Ctrl-C that lands while a worker is still importing cannot print a traceback there
    (the initializer :func:`_init_worker` only runs after the imports). The driver's own handler is restored at
    once; a Ctrl-C in that instant is lost, never half-handled.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _ignore_sigint() -> None:
    """In pool workers: Ctrl-C is the driver's to handle (it stops them), so a worker never prints a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_ray(todo: list[Trial], fn: TrialFn, backend: BackendConfig, on_done) -> None:
    try:
        import ray
    except ImportError as e:
        raise FmgaugeError("backend 'ray' needs Ray: pip install 'fmgauge[ray]'.") from e
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": backend.address, "log_to_driver": False,
                                  "include_dashboard": False}
        if backend.address is None:
            kwargs["num_cpus"] = backend.workers or os.cpu_count()
        ray.init(**kwargs)
        started_here = True
    try:
        remote = ray.remote(num_cpus=backend.threads_per_worker)(_timed_call)
        pending = {remote.remote(fn, t.config, backend.threads_per_worker): t for t in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                t = pending.pop(ref)
                try:
                    rows, secs = ray.get(ref)
                    on_done(t, rows, secs, None)
                except Exception as e:
                    cause = getattr(e, "cause", e)  # ray.exceptions.RayTaskError carries the trial's exception
                    on_done(t, None, 0.0, traceback.format_exc(), fatal=isinstance(cause, INPUT_ERRORS))
                    if isinstance(cause, INPUT_ERRORS):
                        for ref in pending:
                            ray.cancel(ref)
                        raise _input_error(t, cause) from None
    finally:
        if started_here:
            ray.shutdown()
