"""The one rich console fmgauge writes to (stderr), shared by log lines and progress bars so they interleave.

On a terminal, log records go through rich (levels, colours, bars). Anywhere else (nohup, CI, a pipe) they are
plain timestamped lines that never wrap, so a log file holds one line per message and one line per error.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import lru_cache

from rich.console import Console


def stderr_is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    """The process-wide stderr console (no soft wrapping when stderr is not a terminal)."""
    return Console(stderr=True, soft_wrap=not stderr_is_tty())


def configure_logging(*, verbose: bool = False) -> None:
    """Root logging for the CLI: rich on a terminal, ``HH:MM:SS message`` lines otherwise."""
    level = logging.DEBUG if verbose else logging.INFO
    if stderr_is_tty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr_console(), show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        # Hugging Face's tqdm bars (weights loading, shard writing) are carriage-return lines in a log file; our
        # progress lines say the same. Read when transformers is imported, inherited by worker processes.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=level, handlers=[handler])
