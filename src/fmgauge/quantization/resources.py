"""Wall time and peak memory of a piece of work (CPU: resident set size sampled by a thread; CUDA: allocator peak)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Usage:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # peak resident memory of this process while the work ran (sampled every 50 ms)
    start_rss_mb: float = 0.0  # resident memory when it started (so peak - start = what the work added)
    peak_cuda_mb: float | None = None
    cpu_seconds: float = 0.0  # user + system CPU time of this process (meaningful on a shared machine)

    def to_dict(self) -> dict:
        return dict(vars(self))


class measure:  # noqa: N801 - used as a context manager: ``with measure() as u: ...``
    """Context manager filling a :class:`Usage`."""

    def __init__(self, interval: float = 0.05) -> None:
        self.usage = Usage()
        self._interval = interval
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.usage.peak_rss_mb = max(self.usage.peak_rss_mb, self._proc.memory_info().rss / 2**20)
            self._stop.wait(self._interval)

    def __enter__(self) -> Usage:
        self.usage.start_rss_mb = self.usage.peak_rss_mb = self._proc.memory_info().rss / 2**20
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        self._cpu0 = sum(self._proc.cpu_times()[:2])
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        self.usage.seconds = time.perf_counter() - self._t0
        self.usage.cpu_seconds = sum(self._proc.cpu_times()[:2]) - self._cpu0
        self._stop.set()
        self._thread.join()
        self.usage.peak_rss_mb = max(self.usage.peak_rss_mb, self._proc.memory_info().rss / 2**20)
        if torch.cuda.is_available():
            self.usage.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
