"""The ``fmgauge`` command line. Thin: parses options, builds a config, calls the library, prints a summary."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fmgauge.core.console import configure_logging, stderr_console
from fmgauge.core.files import check_output_dir, check_output_file
from fmgauge.core.validation import FmgaugeError, did_you_mean

console = stderr_console()
app = typer.Typer(
    help="fmgauge: measure whether a foundation-model pipeline can be trusted, one question at a time.",
    no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
)
wl = typer.Typer(
    help="Weak labels from a VLM/LLM: will they help your classifier or hurt it? (the crossover study)",
    no_args_is_help=True,
)
app.add_typer(wl, name="weak-labels")

# One sub-app per subsystem, each in ``fmgauge/<subsystem>/cli.py`` exposing ``app`` (light to import: heavy
# modules are imported inside the commands).
for _module, _name in (("contamination", "contamination"), ("quantization", "quantize"), ("masking", "masking")):
    if (importlib.util.find_spec(f"fmgauge.{_module}") is not None
            and importlib.util.find_spec(f"fmgauge.{_module}.cli") is not None):
        app.add_typer(importlib.import_module(f"fmgauge.{_module}.cli").app, name=_name)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    configure_logging(verbose=verbose)


def _csv_ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FmgaugeError(f"{option} must be comma-separated integers like 10,20,50; got {text!r}.") from None


def parse_labeler_spec(spec: str, accuracy: float | None) -> dict:
    """``simulated:<noise>``, ``file:<path>``, ``open_clip:<model>``, ``text-embedding:<model>``,
    ``causal-lm:<model>`` -> a labeler config dict."""
    kind, _, arg = spec.partition(":")
    if kind == "simulated":
        d: dict = {"kind": "simulated", "noise": arg or "random"}
        if accuracy is not None:
            d["accuracy"] = accuracy
        return d
    if kind == "file":
        return {"kind": "file", "path": arg}
    if kind == "open_clip":
        return {"kind": "open_clip", "model": arg or "biomedclip"}
    if kind == "text-embedding":
        return {"kind": "text-embedding", "model": arg or "minilm-l6"}
    if kind == "causal-lm":
        return {"kind": "causal-lm", "model": arg or "smollm2-135m"}
    raise FmgaugeError(
        f"--labeler must look like simulated:random|simulated:class-conditional|simulated:instance, "
        f"file:<path.csv>, open_clip:<model>, text-embedding:<model> or causal-lm:<model>; got {spec!r}."
    )


def _labeler(spec: str, accuracy: float | None):  # noqa: ANN202 - a labeler config
    """``--labeler`` (+ ``--accuracy``) -> a validated labeler config; problems named by their option, one line."""
    from pydantic import ValidationError

    from fmgauge.core.config import validation_message
    from fmgauge.weaklabels.labelers import parse_labeler

    if accuracy is not None and not spec.startswith("simulated"):
        raise FmgaugeError(f"--accuracy sets a simulated labeler's accuracy; --labeler {spec} is not simulated.")
    try:
        return parse_labeler(parse_labeler_spec(spec, accuracy))
    except ValidationError as e:
        raise FmgaugeError(validation_message(e, source=f"--labeler {spec}", options={
            "accuracy": "--accuracy", "noise": "simulated:<noise>", "path": "file:<path>",
            "model": f"{spec.partition(':')[0]}:<model>"})) from None


# The columns of a text:<file> dataset, for every command that takes --dataset (see datasets_text.with_text_options)
TextColumnOpt = Annotated[str | None, typer.Option(
    help="With a text:<file> dataset: the text column (a position with --no-header).")]
LabelColumnOpt = Annotated[str | None, typer.Option(
    help="With a text:<file> dataset: the label column (a position with --no-header).")]
NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="The text:<file> dataset has no header row (columns "
                                                               "are positions 0, 1, ...).")]


@wl.command("label")
def label_cmd(
    config: Annotated[Path | None, typer.Option(help="Study YAML: label the pool with each of its labelers.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (see `fmgauge info`), with --labeler.")] = None,
    labeler: Annotated[str | None, typer.Option(
        help="simulated:random|class-conditional|instance, file:<csv/parquet>, open_clip:<model>, "
             "text-embedding:<model> (minilm-l6) or causal-lm:<model> (smollm2-135m, gemma3-270m).")] = None,
    accuracy: Annotated[float | None, typer.Option(help="Target accuracy of a simulated labeler.")] = None,
    split: Annotated[str | None, typer.Option(help="Split to label (default: the study's pool split, or train).")] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|mps for model-based labelers.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the outputs as CSV (id, label, p_<class>).")] = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    no_header: NoHeaderOpt = False,
) -> None:
    """Run labeler(s) over a dataset split and cache the outputs (labels + per-class probabilities)."""
    import numpy as np
    import pandas as pd

    from fmgauge.core.config import load_config
    from fmgauge.core.data import load_dataset
    from fmgauge.core.datasets_text import with_text_options
    from fmgauge.weaklabels.labelers import run_labeler
    from fmgauge.weaklabels.study import StudyConfig, labeler_metrics

    if config is not None:
        if text_column or label_column or no_header:
            raise FmgaugeError("--text-column, --label-column and --no-header go with --dataset; in a study config "
                               "write them into the dataset name: text:<file>?text_column=...&header=none.")
        cfg = load_config(StudyConfig, config)
        ds_name, labelers, split = cfg.dataset, list(cfg.labelers), split or cfg.pool_split
    elif dataset and labeler:
        ds_name = with_text_options(dataset, text_column=text_column, label_column=label_column, header=not no_header)
        labelers, split = [_labeler(labeler, accuracy)], split or "train"
    else:
        raise FmgaugeError("give --config STUDY.yaml, or both --dataset and --labeler.")
    if out is not None:
        check_output_file(out, option="--out")  # before any labeler runs
    if device is not None:
        from fmgauge.core.models import check_device_dtype

        check_device_dtype(device)
    ds = load_dataset(ds_name)
    sp = ds.split(split)
    table = Table("labeler", "items", "accuracy [95% CI]", "always the majority class", "balanced accuracy",
                  "recall / precision per class", "AUC", title=f"{ds.name} / {split}")
    frames, warnings = [], []
    for lab in labelers:
        if device and hasattr(lab, "device"):
            lab = lab.model_copy(update={"device": device})
        res = run_labeler(lab, ds, split)
        m = labeler_metrics(sp.y, res.probs, res.labels, ds.n_classes, ds.class_names)
        a, b = m["accuracy"], m["balanced_accuracy"]
        per = "; ".join(f"{c}: {_rate(r['value'])} / {_rate(p['value'])}"
                        for c, r, p in zip(ds.class_names, m["recall"], m["precision"], strict=True))
        table.add_row(lab.display_name(), str(len(res.ids)), f"{a['value']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}]",
                      f"{m['majority_rate']:.3f} ('{m['majority_class']}')", f"{b['value']:.3f}", per,
                      "–" if m["auc"] is None else f"{m['auc']:.3f}")
        if m["warning"]:
            warnings.append(f"{lab.display_name()}: {m['warning']}")
        df = pd.DataFrame({"labeler": lab.display_name(), "id": res.ids, "label": res.labels})
        for k, c in enumerate(ds.class_names):
            df[f"p_{c}"] = np.round(res.probs[:, k], 6)
        frames.append(df)
    console.print(table)
    for w in warnings:
        console.print(f"[bold yellow]WARNING[/] {escape(w)}")
    if out:
        pd.concat(frames).to_csv(out, index=False)
        console.print(f"wrote {out}")


def _rate(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v:.2f}"


@wl.command("calibrate")
def calibrate_cmd(
    config: Annotated[list[Path], typer.Option(
        help="Study YAML (see configs/weaklabels/). Repeat it to run several studies into <out>/<name>/ with one "
             "combined report, in the order given.")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<name>); resumes if it exists.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Override the number of seeds.")] = None,
    n_gold: Annotated[str | None, typer.Option(help="Override the gold-set sizes, e.g. 10,20,50,100.")] = None,
    backend: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(help="Local worker processes (default: CPU count).", min=1)] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (auto, ray://host:port).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the crossover sweep (students × n_gold × seeds × conditions) and write the report."""
    import contextlib

    from fmgauge.core.config import load_config, read_yaml

    for c in config:  # YAML problems surface before the heavy imports below
        read_yaml(c, option="--config")
    from fmgauge.core.runner import BackendConfig
    from fmgauge.core.store import run_lock
    from fmgauge.weaklabels.report import write_suite_report
    from fmgauge.weaklabels.study import StudyConfig, calibrate

    overrides = {"seeds": seeds, "n_gold": _csv_ints(n_gold, "--n-gold")}
    cfgs = [load_config(StudyConfig, c, overrides) for c in config]  # validate every config before running any
    names = [c.name for c in cfgs]
    if len(set(names)) < len(names):
        raise FmgaugeError(f"--config files must have distinct study names, got {names}.")
    if backend not in ("local", "ray"):
        raise FmgaugeError(f"--backend must be local or ray, got {backend!r}.")
    be = BackendConfig(backend=backend, workers=workers, address=address)
    suite = out or Path("runs") / "suite"
    run_dirs = [(out or Path("runs") / c.name) if len(cfgs) == 1 else suite / c.name for c in cfgs]
    for d in run_dirs:
        check_output_dir(d, option="--out")
    results = []
    with contextlib.ExitStack() as held:  # every run directory locked before anything is written into any
        for d in ([suite] if len(cfgs) > 1 else []) + run_dirs:
            held.enter_context(run_lock(d))
        for cfg, run_dir in zip(cfgs, run_dirs, strict=True):
            res = calibrate(cfg, run_dir, backend=be, progress=progress)
            _print_crossovers(res.summary)
            run = res.summary["meta"]["run"]
            console.print(f"[{cfg.name}] {run['ran']} trials run, {run['skipped']} reused, {run['seconds']:.0f} s "
                          f"({run['trials_per_minute']:.1f} trials/min). Report: "
                          f"[bold]{res.run_dir / 'report.html'}[/]")
            results.append(res)
        if len(results) > 1:
            path = write_suite_report(results, suite)
            console.print(f"Combined report: [bold]{path}[/]")


@wl.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A calibrate run directory.")]) -> None:
    """Rebuild report.html / report.md of a finished study from its store (no retraining)."""
    from fmgauge.weaklabels import load_result, rebuild_report

    path = rebuild_report(run_dir)
    _print_crossovers(load_result(run_dir).summary)
    console.print(f"Report: [bold]{path}[/]")


@wl.command("decide")
def decide_cmd(
    gold: Annotated[Path, typer.Option(help="CSV with columns id, label (class name or index): your gold set.")],
    labeler_outputs: Annotated[Path, typer.Option(
        help="CSV/Parquet of the labeler on (at least) the gold items: id + p_<class> columns and/or label.")],
    features: Annotated[Path | None, typer.Option(
        help="Per-item features: .npz (ids, features) or CSV (id + numeric columns).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Instead of --features: a dataset (name, folder:, text:) whose ids hold the gold ids.")] = None,
    split: Annotated[str | None, typer.Option(help="With --dataset: the split holding the gold ids.")] = None,
    representation: Annotated[str, typer.Option(
        help="With --dataset: raw | tfidf | embed:<model> (texts need tfidf or embed).")] = "raw",
    primary: Annotated[str | None, typer.Option(
        help="Rule giving the verdict: delta-worth (default with a pool), cv-delta, weak-student, projection, auc "
             "(default without a pool) or accuracy (the paper's).")] = None,
    max_pairs: Annotated[int, typer.Option(help="Leave-pair-out fits for the gold-only AUC.", min=1)] = 120,
    pool_max: Annotated[int, typer.Option(help="Pool items the pool rules train on (a seeded subset).",
                                          min=10)] = 2000,
    proxy: Annotated[str | None, typer.Option(
        help="Student the rules train: sk-logreg (default: converged L2 logistic regression), logreg (the "
             "sweep's torch logreg, also solved to convergence), mlp (trained under the step budget).")] = None,
    fallback: Annotated[str, typer.Option(
        help="What an uncertain verdict acts as: auto (the default: with 20+ gold items of the rarer class the side "
             "its estimate favours, with fewer the weak labels if they agree with a model trained on your gold "
             "labels across the pool, AUC > 0.52, or the labeler ranks your gold items 0.1 better than gold-only, "
             "else gold only), labeler (the labeler's ranking of your gold items at every m, AUC >= 0.7 or above "
             "gold-only), weak (the free weak labels unless shown to hurt) or lean (the side its estimate "
             "favours).")] = "auto",
    curve: Annotated[bool, typer.Option(
        help="Fit the gold-only learning curve for n* ('they stop helping at about n* gold labels').")] = True,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    no_header: NoHeaderOpt = False,
    seed: Annotated[int, typer.Option(help="Seed of the pairs, folds, pool subset and bootstraps.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the decision as JSON.")] = None,
) -> None:
    """Will the weak labels help? Verdict from 10+ gold labels: use-weak-labels / gold-only / uncertain."""
    import json

    from fmgauge.core.datasets_text import with_text_options
    from fmgauge.weaklabels.decide import PROXY_KINDS, RULES
    from fmgauge.weaklabels.decide_files import decide_from_files
    from fmgauge.weaklabels.verdicts import FALLBACKS

    if dataset is None and (text_column or label_column or no_header):
        raise FmgaugeError("--text-column, --label-column and --no-header describe a --dataset text:<file>; give "
                           "--dataset too.")
    if primary is not None and primary not in RULES:
        raise FmgaugeError(f"--primary must be one of {', '.join(RULES)}, got {primary!r}.{did_you_mean(primary, RULES)}")
    if proxy is not None and proxy not in PROXY_KINDS:
        raise FmgaugeError(f"--proxy must be one of {', '.join(PROXY_KINDS)}, got {proxy!r}."
                           f"{did_you_mean(proxy, PROXY_KINDS)}")
    if fallback not in FALLBACKS:
        raise FmgaugeError(f"--fallback must be auto, labeler, weak or lean, got {fallback!r}."
                           f"{did_you_mean(fallback, FALLBACKS)}")
    if not (representation in ("raw", "tfidf") or (representation.startswith("embed:") and representation[6:])):
        raise FmgaugeError(f"--representation must be raw, tfidf or embed:<model> (e.g. embed:minilm-l6), got "
                           f"{representation!r}.")
    if json_out is not None:
        check_output_file(json_out, option="--json")
    if dataset is not None:
        dataset = with_text_options(dataset, text_column=text_column, label_column=label_column,
                                    header=not no_header)
    d = decide_from_files(gold, labeler_outputs, features=features, dataset=dataset, split=split,
                          representation=representation, primary=primary, max_pairs=max_pairs, pool_max=pool_max,
                          seed=seed, proxy=None if proxy is None else {"kind": proxy}, fallback=fallback,
                          curve=curve)
    pool = f", pool of {d.pool_size} weak-labelled items" if d.pool_size else ", no pool (pool rules not run)"
    weighted = ", weighted (stratified gold set)" if d.weighted else ""
    table = Table("rule", "gold-only AUC [95% CI]", "weak side [95% CI]", "verdict", "more gold labels",
                  "n* (rough)", title=f"Decision from {d.n_gold} gold labels (class counts {d.class_counts}){pool}"
                                      f"{weighted}")
    side = {"accuracy": "labeler accuracy", "auc": "labeler AUC", "cv-delta": "gold+weak AUC",
            "delta-worth": "gold+weak AUC",
            "weak-student": "weak-trained AUC", "projection": "weak-trained AUC"}
    for r in d.rules.values():
        more = "–" if r.verdict != "uncertain" or r.rule == "projection" else (
            f"> {100_000}" if r.more_gold is None else str(r.more_gold))
        xo = "–" if r.crossover is None else f"{r.crossover:.0f}"
        verdict = r.verdict if r.verdict != "uncertain" else f"uncertain (leans {r.lean})"
        lab = "unusable" if r.labeler.value != r.labeler.value else str(r.labeler)
        table.add_row(f"{r.rule}{' (primary)' if r.rule == d.primary else ''}", str(d.gold_auc),
                      f"{side[r.rule]} {lab}", verdict, more, xo)
    Console().print(table)
    Console().print(d.explain(), markup=False)  # "[cv-delta rule]" is text, not rich markup
    Console().print(f"verdict: [bold]{d.verdict}[/]" + (f" (act on: {d.choice})" if d.verdict == "uncertain" else ""))
    if json_out:
        json_out.write_text(json.dumps(d.to_dict(), indent=1))


@wl.command("sample-gold")
def sample_gold_cmd(
    labeler_outputs: Annotated[Path, typer.Option(
        help="CSV/Parquet of the labeler's outputs on your unlabelled items: id + p_<class> columns and/or label.")],
    out: Annotated[Path, typer.Option(help="CSV to write: id, weak_label, weight and an empty label column to "
                                           "fill in; decide reads its weight column.")],
    m: Annotated[int, typer.Option("--m", help="How many items to label.", min=1)] = 20,
    allocation: Annotated[str, typer.Option(
        help="Gold items per weak class: sqrt (∝ √size, the default), proportional or equal.")] = "sqrt",
    exclude: Annotated[Path | None, typer.Option(
        help="CSV with an id column of items already labelled (never proposed).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
) -> None:
    """Which items to label first: m items stratified by the labeler's output, with the weights decide needs."""
    import numpy as np
    import pandas as pd

    from fmgauge.weaklabels.labelers.file import parse_outputs, read_table
    from fmgauge.weaklabels.sample_gold import ALLOCATIONS, sample_gold

    if allocation not in ALLOCATIONS:
        raise FmgaugeError(f"--allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}.")
    if out.suffix.lower() != ".csv":
        raise FmgaugeError(f"--out must be a .csv file (the gold file decide reads), got {out}.")
    df = read_table(labeler_outputs, what="labeler-outputs file")
    if "labeler" in df.columns and df["labeler"].nunique() > 1:
        raise FmgaugeError(f"--labeler-outputs {labeler_outputs} holds {df['labeler'].nunique()} labelers "
                           f"({sorted(df['labeler'].astype(str).unique())[:4]}); keep the rows of one.")
    pcols = [str(c)[2:] for c in df.columns if str(c).startswith("p_")]
    if pcols:
        classes = tuple(pcols)
    elif "label" in df.columns:
        classes = tuple(sorted(df["label"].astype(str).unique()))
    else:
        raise FmgaugeError(f"--labeler-outputs {labeler_outputs} needs p_<class> columns or a label column; it has "
                           f"{list(df.columns)[:8]}.")
    outputs = parse_outputs(df, classes, source=str(labeler_outputs))
    ids = np.asarray(outputs.ids).astype(str)
    done = None
    if exclude is not None:
        ex = read_table(exclude, what="--exclude file")
        if "id" not in ex.columns:
            raise FmgaugeError(f"--exclude {exclude} needs an id column; it has {list(ex.columns)[:8]}.")
        done = np.isin(ids, ex["id"].astype(str).to_numpy())
    design = sample_gold(outputs.labels, m, len(classes), allocation=allocation, seed=seed, exclude=done)
    names = np.array(classes)
    pd.DataFrame({"id": ids[design.index], "weak_label": names[design.stratum],
                  "weight": np.round(design.weights, 6), "label": ""}).to_csv(out, index=False)
    table = Table("weak class", "items the labeler gave it", "to label", "weight each",
                  title=f"{m} items to label ({allocation} allocation over the labeler's classes)")
    for k, c in enumerate(classes):
        w = design.weights[design.stratum == k]
        table.add_row(c, str(design.sizes[k]), str(design.drawn[k]), "–" if not len(w) else f"{w[0]:.3f}")
    Console().print(table)
    console.print(f"wrote {out}: fill in the label column, then `fmgauge weak-labels decide --gold {out} ...` "
                  "(it reads the weight column).")


def _print_crossovers(summary: dict) -> None:
    table = Table("labeler", "student", "empirical n* [95% CI]", "rate-only n*", title="Crossovers")
    for r in summary["crossovers"]:
        table.add_row(r["labeler"], r["student"], r.get("empirical_text", "–"), r["rate_only_text"])
    Console().print(table)


@app.command("info")
def info_cmd() -> None:
    """List registered datasets, labeler kinds, students and where data is looked for."""
    from fmgauge.core.data import DATASETS, data_dirs
    from fmgauge.weaklabels.labelers import LABELERS
    from fmgauge.weaklabels.students import STUDENTS

    c = Console()
    c.print("[bold]data directories[/] (search order):", *[f"  {d}" for d in data_dirs()], sep="\n")
    c.print(f"[bold]datasets[/]: {', '.join(DATASETS.names())} (or folder:<path> with labels.csv, "
            "features:<x.npz>, text:<file.csv|tsv|jsonl> with optional ?positive=X&descriptions=F.yaml&"
            "text_column=C&label_column=C&header=none)")
    c.print(f"[bold]labeler kinds[/]: {', '.join(LABELERS.names())}")
    c.print(f"[bold]students[/]: {', '.join(STUDENTS.names())}")


def command_line() -> str:
    """The command being run, as the user can paste it again (``fmgauge weak-labels calibrate --config ...``)."""
    import shlex

    return "fmgauge " + shlex.join(sys.argv[1:])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str, code: int = 2) -> None:
    """``error: <message>`` as ONE line on stderr (TTY or not: rich must not wrap it), then exit ``code``."""
    console.print(f"[red bold]error:[/] {escape(_one_line(message))}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _interrupted(e: BaseException) -> None:
    """Ctrl-C: what is saved and what is left, and the exact command that resumes (exit 130)."""
    from fmgauge.core.progress import interrupted_at
    from fmgauge.core.runner import Interrupted

    if isinstance(e, Interrupted):  # the runner counted the trials saved
        what = str(e).removesuffix("rerun the same command to resume.").rstrip("; ")
    else:
        where = interrupted_at()
        what = f"interrupted ({where})" if where else "interrupted"
        what += "; finished trials, cached model outputs and embeddings are kept"
    console.print(f"{_one_line(what)}; rerun `{command_line()}` to resume.", markup=False, highlight=False,
                  soft_wrap=True)
    sys.exit(130)


def main() -> None:
    """The console script: every refusal is ONE ``error:`` line with exit code 2 (usage errors included), Ctrl-C
    says what is saved and how to resume (exit 130)."""
    from pydantic import ValidationError

    from fmgauge.core.config import validation_message

    try:  # typer >= 0.20 carries its own click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer on click
        from click import exceptions as cx

    from fmgauge.core.progress import clear_interrupt

    clear_interrupt()
    cmd = typer.main.get_command(app)
    try:
        cmd._main_shell_completion({}, "fmgauge", None)  # noqa: SLF001 - typer's own entry does the same
        with cmd.make_context("fmgauge", sys.argv[1:]) as ctx:
            cmd.invoke(ctx)
    except typer.Exit as e:  # --help, typer.Exit
        sys.exit(e.exit_code)
    except cx.NoArgsIsHelpError as e:
        e.show()
        sys.exit(2)
    except cx.UsageError as e:  # a bad option value, a missing option, an unknown command
        path = e.ctx.command_path if e.ctx is not None else "fmgauge"
        _error(f"{e.format_message()} (see `{path} --help`)")
    except cx.ClickException as e:
        _error(e.format_message())
    except FmgaugeError as e:
        _error(str(e))
    except ValidationError as e:  # a config built outside load_config: still one line
        _error(validation_message(e))
    except (KeyboardInterrupt, typer.Abort) as e:
        _interrupted(e)
    except BrokenPipeError:  # `fmgauge ... | head`: the reader left; no traceback, nothing more to write
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
