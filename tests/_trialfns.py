"""Module-level trial functions for test_core_runner.py (importable by spawn workers and Ray workers)."""

from __future__ import annotations

import os

import numpy as np

FAIL_ENV = "FMGAUGE_TEST_FAIL_SEED"


def draw(config: dict) -> list[dict]:
    """Two rows of seeded draws: a pure function of ``config``."""
    rng = np.random.default_rng(config["seed"])
    return [{"seed": config["seed"], "row": i, "value": float(rng.normal()) * config.get("scale", 1.0)}
            for i in range(2)]


def flaky(config: dict) -> list[dict]:
    """Like :func:`draw`, but raises for the seed named in $FMGAUGE_TEST_FAIL_SEED."""
    if os.environ.get(FAIL_ENV) == str(config["seed"]):
        raise RuntimeError(f"planted failure for seed {config['seed']}")
    return draw(config)


GONE_ENV = "FMGAUGE_TEST_INPUT_FILE"


def reads_input(config: dict) -> list[dict]:
    """Reads the file named in $FMGAUGE_TEST_INPUT_FILE (a dataset a trial needs), then draws like :func:`draw`."""
    with open(os.environ[GONE_ENV]) as f:
        f.read()
    return draw(config)


def stepped(config: dict) -> list[dict]:
    """A training-like trial: ``config["steps"]`` steps counted on a progress tracker (with a loss), then draws."""
    import time

    from fmgauge.core.progress import progress

    with progress(f"trial {config['seed']}: train", total=config["steps"], unit="step") as p:
        for i in range(config["steps"]):
            time.sleep(0.02)
            p.advance(1, loss=1.0 / (i + 1))
    return draw(config)
