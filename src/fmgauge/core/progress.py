"""One progress facility for every long-running loop: a rich bar on a terminal, log lines everywhere else.

On a TTY, :func:`progress` shows a rich bar (description, bar, done/total, elapsed, ETA and any metrics such as
the training loss). Under nohup, CI, a pipe or a notebook, a bar is invisible until the end, so instead it logs
one plain line (logger ``fmgauge.progress``, INFO)

    plant: fine-tune 120/500 (24%) | 3.21 step/s | elapsed 0:00:37 | eta 0:01:58 | loss 2.3104

every ``every`` seconds (default 30, or ``$FMGAUGE_PROGRESS_EVERY``), at the first step and at the end; a heartbeat
thread repeats the last line when one step takes longer than ``every`` (a GPTQ block, a model load), so a log file
always shows where a run is and that it is alive. ``FMGAUGE_PROGRESS=bar|log|off`` forces a mode.

Usage::

    with progress("quantize: GPTQ", total=len(blocks), unit="block") as p:
        for block in blocks:
            ...
            p.advance(1, loss=loss)          # metrics are optional keyword numbers or short strings

The tracker is thread-safe; ``advance`` costs a few microseconds when nothing is printed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("fmgauge.progress")
T = TypeVar("T")

_MODES = ("auto", "bar", "log", "off")


def _default_every() -> float:
    try:
        return max(0.05, float(os.environ.get("FMGAUGE_PROGRESS_EVERY", "30")))
    except ValueError:
        return 30.0


def progress_mode(enabled: bool = True) -> str:
    """``bar`` on an interactive terminal, ``log`` otherwise, ``off`` when disabled (or forced by the env)."""
    if not enabled:
        return "off"
    forced = os.environ.get("FMGAUGE_PROGRESS", "auto").strip().lower()
    if forced in _MODES and forced != "auto":
        return forced
    stream = sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "log"


def format_seconds(s: float) -> str:
    """``h:mm:ss`` (``?`` when unknown)."""
    if s != s or s in (float("inf"), float("-inf")) or s < 0:  # nan / inf
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt_metric(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


class Tracker:
    """Counts done steps and renders them; made by :func:`progress`, not directly."""

    def __init__(self, what: str, total: int | None, *, unit: str, mode: str, every: float) -> None:
        self.what, self.total, self.unit, self.mode, self.every = what, total, unit, mode, every
        self.done = 0
        self.metrics: dict[str, Any] = {}
        self.start = time.monotonic()
        self._last_line = -float("inf")
        self._lock = threading.Lock()
        self._bar = None
        self._task = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- rendering -------------------------------------------------------------------------------------------
    def line(self) -> str:
        """The status as one plain line: done/total (percent), rate, elapsed, ETA, metrics."""
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        if self.total is not None:
            parts = [f"{self.what} {self.done}/{self.total}"]
        else:  # one long step (a model load) counts nothing: just its name
            parts = [f"{self.what} {self.done}" if self.done else self.what]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if self.done:
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if self.total is not None and self.done and self.done < self.total:
            parts.append(f"eta {format_seconds((self.total - self.done) / rate)}")
        parts += [f"{k} {_fmt_metric(v)}" for k, v in self.metrics.items()]
        return " | ".join(parts)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_line >= self.every:
            self._last_line = now
            log.info(self.line())

    # ---- the API ---------------------------------------------------------------------------------------------
    def advance(self, n: int = 1, **metrics: Any) -> None:
        """Count ``n`` more steps done; keyword metrics (e.g. ``loss=2.31``) replace the shown ones."""
        with self._lock:
            self.done += n
            if metrics:
                self.metrics.update(metrics)
            if self.mode == "bar" and self._bar is not None:
                self._bar.update(self._task, advance=n, metrics=self._metric_text())
            elif self.mode == "log":
                self._emit(force=self.done == n)  # the first step always shows (rate and ETA become known)

    def update(self, **metrics: Any) -> None:
        """Replace the shown metrics without counting a step."""
        self.advance(0, **metrics)

    def _metric_text(self) -> str:
        return "  ".join(f"{k} {_fmt_metric(v)}" for k, v in self.metrics.items())

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from fmgauge.core.console import stderr_console

            cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}")]
            self._bar = Progress(*cols, console=stderr_console(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total, metrics="")
        elif self.mode == "log":
            log.info(f"{self.what}: started" + (f" ({self.total} {self.unit})" if self.total is not None else ""))
            self._last_line = time.monotonic()
            self._thread = threading.Thread(target=self._heartbeat, name="fmgauge-progress", daemon=True)
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.every, 5.0)):
            with self._lock:
                self._emit()

    def _close(self, ok: bool) -> None:
        self._stop.set()
        if self._thread is not None:  # a heartbeat already past its wait would log after the last line
            self._thread.join()
        if self._bar is not None:
            self._bar.stop()
        elif self.mode == "log":
            with self._lock:
                if ok:
                    log.info(f"{self.line()} | done")
                else:
                    log.info(f"{self.line()} | stopped")


@contextmanager
def progress(what: str, total: int | None = None, *, unit: str = "it", enabled: bool = True,
             every: float | None = None) -> Iterator[Tracker]:
    """Track a loop of ``total`` steps (``None``: unknown); see the module docstring for what is shown where.

    ``enabled=False`` gives a tracker that counts silently (library callers that show their own progress).
    """
    t = Tracker(what, total, unit=unit, mode=progress_mode(enabled), every=_default_every() if every is None else every)
    t._open()
    ok = False
    try:
        yield t
        ok = True
    except KeyboardInterrupt:
        if _interrupted is None:  # the innermost loop Ctrl-C stopped (the CLI's message names it)
            _note_interrupt(t)
        raise
    finally:
        t._close(ok)


_interrupted: str | None = None


def _note_interrupt(t: Tracker) -> None:
    global _interrupted
    todo = f", {t.total - t.done} to go" if t.total is not None else ""
    _interrupted = f"{t.what}: {t.done}" + (f" of {t.total}" if t.total is not None else "") + f" {t.unit} done{todo}"


def clear_interrupt() -> None:
    """Forget where an earlier Ctrl-C stopped (a new command starts)."""
    global _interrupted
    _interrupted = None


def interrupted_at() -> str | None:
    """Where Ctrl-C stopped the last tracked loop (``"embedding reference: 40 of 100 image done, 60 to go"``), or
    None when it stopped outside any."""
    return _interrupted


def track(items: Iterable[T], what: str, *, total: int | None = None, unit: str = "it",
          enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with :func:`progress` (``total`` from ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(what, total, unit=unit, enabled=enabled) as p:
        for x in items:
            yield x
            p.advance(1)
