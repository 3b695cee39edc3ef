"""``fmgauge masking``: compare masking strategies for masked-LM adaptation (thin: parses, calls the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Which tokens should I mask when I adapt a masked LM to my task? (Typhoon vs random vs "
                       "whole-word, multi-seed, paired)", no_args_is_help=True)
console = Console(stderr=True)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@app.command("compare")
def compare_cmd(
    task: Annotated[str | None, typer.Option(help="mrpc | glue:<name> | a GLUE-style TSV/CSV file or folder.")] = None,
    model: Annotated[str | None, typer.Option(help="Masked LM: minilm-l6, a local directory or a hub id.")] = None,
    strategies: Annotated[str | None, typer.Option(help="Comma-separated: random,whole-word,typhoon.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (0..n-1); pairs need >= 2.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (see configs/masking/); flags override it.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<name>); resumes if it exists.")] = None,
    mlm_steps: Annotated[int | None, typer.Option(help="MLM optimiser steps per trial.")] = None,
    ft_epochs: Annotated[float | None, typer.Option(help="Fine-tuning epochs.")] = None,
    ft_train_size: Annotated[int | None, typer.Option(help="Stratified fine-tuning subsample of train.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per example.")] = None,
    rate: Annotated[float | None, typer.Option(help="Expected masking rate for every strategy.")] = None,
    replacement: Annotated[str | None, typer.Option(help="mask (all [MASK]) or 80-10-10.")] = None,
    spread: Annotated[float | None, typer.Option(help="Typhoon spread in [0, 1] (0 = uniform).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column of a TSV/CSV task.")] = None,
    text_columns: Annotated[str | None, typer.Option(
        help="Sentence column(s) of a TSV/CSV task: A or A,B for sentence pairs (positions with --no-header).")
    ] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="The TSV/CSV task files have no header row "
                                                                "(columns are positions 0, 1, ...).")] = False,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|mps.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32|float16|bfloat16|auto.")] = None,
    backend: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(help="Parallel trials (local processes; default: CPU count).",
                                                min=1)] = None,
    threads: Annotated[int, typer.Option(help="Torch threads per trial process.", min=1)] = 1,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (auto, ray://host:port).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """For each strategy x seed: MLM stage on the task's text, fine-tune, score dev/test; paired report."""
    from fmgauge.core.config import load_config
    from fmgauge.core.files import check_output_dir
    from fmgauge.core.models import check_device_dtype
    from fmgauge.core.runner import BackendConfig
    from fmgauge.core.store import run_lock
    from fmgauge.core.validation import FmgaugeError
    from fmgauge.masking.experiment import CompareConfig, compare

    masking = {k: v for k, v in {"rate": rate, "replacement": replacement, "spread": spread}.items()
               if v is not None}  # merged key by key into the file's masking: mapping
    cfg = load_config(CompareConfig, config, {
        "task": task, "model": model, "strategies": _csv(strategies), "seeds": seeds, "mlm_steps": mlm_steps,
        "ft_epochs": ft_epochs, "ft_train_size": ft_train_size, "max_length": max_length,
        "label_column": label_column, "text_columns": _csv(text_columns),
        "header": False if no_header else None, "device": device, "dtype": dtype,
        "masking": masking or None}, options={"text_columns": "--text-columns", "header": "--no-header",
                                              **{f"masking.{k}": f"--{k}" for k in masking}})
    if backend not in ("local", "ray"):
        raise FmgaugeError(f"--backend must be local or ray, got {backend!r}.")
    if device is not None or dtype is not None:
        check_device_dtype(device, dtype)  # as given on the command line
    check_device_dtype(cfg.device, cfg.dtype, names=("device", "dtype"))  # and as configured
    be = BackendConfig(backend=backend, workers=workers, address=address, threads_per_worker=threads)
    run_dir = check_output_dir(out if out is not None else Path("runs") / cfg.name, option="--out")
    with run_lock(run_dir):  # before the task and model load: a second run into it is refused, changing nothing
        res = compare(cfg, run_dir, backend=be, progress=progress)
    _print(res.summary)
    console.print(f"Report: [bold]{res.run_dir / 'report.html'}[/]")


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A compare run directory.")]) -> None:
    """Rebuild report.html / report.md of a comparison from its store (no retraining)."""
    from fmgauge.masking import rebuild_report
    from fmgauge.masking.experiment import load_result

    path = rebuild_report(run_dir)
    _print(load_result(run_dir).summary)
    console.print(f"Report: [bold]{path}[/]")


@app.command("strategies")
def strategies_cmd() -> None:
    """List the registered masking strategies."""
    from fmgauge.masking.strategies import STRATEGIES

    for name in STRATEGIES:
        doc = (STRATEGIES.get(name).__doc__ or "").strip().splitlines()[0]
        Console().print(f"[bold]{name}[/]: {doc}")


def _print(summary: dict) -> None:
    table = Table("strategy", "seeds", *[c for c in ("dev_f1", "dev_acc", "test_f1", "test_acc")],
                  title=f"{summary['task']} / {summary['model']}")
    for r in summary["strategies"]:
        cells = []
        for c in ("dev_f1", "dev_acc", "test_f1", "test_acc"):
            v = r.get(c)
            cells.append(f"{v['value']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}]" if v else "–")
        table.add_row(r["strategy"], str(r["seeds"]), *cells)
    c = Console()
    c.print(table)
    c.print(summary["verdict"])
