"""``fmgauge contamination …``: thin wrappers over the library (heavy imports inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fmgauge.core.files import check_output_dir, check_output_file
from fmgauge.core.validation import FmgaugeError

app = typer.Typer(help="Did the model already see this benchmark? Min-K%++ family, exchangeability test, top-K "
                       "overlap, audits with controls, planted positive controls.", no_args_is_help=True)
console = Console()

Model = Annotated[str, typer.Option(help="Causal LM (smollm2-135m, gemma3-270m) or vision-language model "
                                          "(qwen2.5-vl-3b, qwen2.5-vl-7b, blip2-opt-2.7b, blip2-flan-t5-xl: scores "
                                          "the answer given image + question), a local directory or a hub id.")]
Bench = Annotated[str, typer.Option(help="slake-en, vqa-rad, vqamed2019, pathvqa, omnimedvqa, glue-mrpc, or "
                                         "<layout>:<path> (slake, mevf, pathvqa, omnimedvqa, mrpc, jsonl, csv, tsv).")]
Split = Annotated[str, typer.Option(help="Benchmark split (test, train, validate/dev, all).")]
Device = Annotated[str, typer.Option(help="auto|cpu|cuda|mps.")]
Dtype = Annotated[str, typer.Option(help="float32|float16|bfloat16|auto.")]
MaxItems = Annotated[int | None, typer.Option(help="First N items in canonical order.", min=1)]
TextColumn = Annotated[str | None, typer.Option(
    help="Text column of a csv:/tsv:/jsonl: benchmark (default 'text', else question + answer; a position with "
         "--no-header).")]
NoHeader = Annotated[bool, typer.Option("--no-header", help="The csv:/tsv: benchmark has no header row (columns "
                                                            "are positions 0, 1, ...; text in column 0).")]
ImageRoot = Annotated[Path | None, typer.Option(
    help="Vision-language models: the folder holding the benchmark's images (SLAKE/VQA-RAD json name them but "
         "hold none; a table's relative names default to its own folder).")]
BlankImages = Annotated[bool, typer.Option(
    "--blank-images", help="Vision-language models: score items whose image is missing with a blank 224x224 "
                           "image (the answer's text prior only) instead of refusing. Reported in the output.")]


def _bench_name(benchmark: str, text_column: str | None, no_header: bool) -> str:
    from fmgauge.contamination.benchmarks import with_table_options

    return with_table_options(benchmark, text_column=text_column, header=not no_header)


def run_lock(root: Path):  # noqa: ANN201 - core.store.run_lock, imported when a command runs (pandas is heavy)
    from fmgauge.core.store import run_lock as lock

    return lock(root)


def _validate_device(device: str, dtype: str | None = None, *, config: bool = False) -> str:
    from fmgauge.core.models import check_device_dtype

    # refuses a device this machine lacks, before any model loads (named as a config key when it may come from one)
    check_device_dtype(device, dtype, names=("device", "dtype") if config else ("--device", "--dtype"))
    return device


def _table(df, title: str) -> Table:  # noqa: ANN001
    t = Table(*map(str, df.columns), title=title)
    for r in df.itertuples(index=False):
        t.add_row(*["–" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}" if isinstance(v, float)
                    else str(v) for v in r])
    return t


def _csv_floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FmgaugeError(f"{option} must be comma-separated numbers like 0.1,0.2; got {text!r}.") from None


@app.command("score")
def score_cmd(
    model: Model = "smollm2-135m", benchmark: Bench = "slake-en", split: Split = "test", max_items: MaxItems = None,
    text_column: TextColumn = None, no_header: NoHeader = False,
    reference_model: Annotated[str | None, typer.Option(help="Reference model for the loss ratio.")] = None,
    k: Annotated[float, typer.Option(help="Default Min-K% / Min-K%++ fraction.", min=0, max=1)] = 0.2,
    ks: Annotated[str, typer.Option(help="k sweep, comma-separated.")] = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
    context: Annotated[int | None, typer.Option(help="Window length (default: the model's context).", min=2)] = None,
    stride: Annotated[int | None, typer.Option(help="Window step for long items (default context/2).", min=1)] = None,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward (image tokens included).",
                                              min=1)] = 2048,
    image_root: ImageRoot = None, blank_images: BlankImages = False,
    device: Device = "auto", dtype: Dtype = "float32",
    out: Annotated[Path | None, typer.Option(help="Write per-item scores (.csv or .parquet).")] = None,
) -> None:
    """Per-item scores: loss, zlib, Min-K%, Min-K%++ (k sweep) and the reference ratio. Cached token log-probs.
    A vision-language model scores the answer tokens given image + question."""
    from fmgauge.contamination.detect import score

    if out is not None:
        check_output_file(out, option="--out")  # before any model loads
    res = score(model, _bench_name(benchmark, text_column, no_header), split=split, max_items=max_items,
                reference_model=reference_model, k=k,
                ks=_csv_floats(ks, "--ks"), context=context, stride=stride, max_batch_tokens=batch_tokens,
                device=_validate_device(device, dtype), dtype=dtype, image_root=image_root,
                blank_images=blank_images)
    console.print(_table(res.summary(), f"{model} on {res.benchmark}/{res.split} ({len(res.scores)} items; "
                                        f"scored: {res.meta['scored']})"))
    if res.meta.get("n_blank_images"):
        console.print(f"[yellow]{res.meta['n_blank_images']} of {len(res.scores)} items were scored with a blank "
                      "image (no image file): their scores are the answer's text prior only.[/]")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        (res.scores.to_parquet if out.suffix == ".parquet" else res.scores.to_csv)(out, index=False)
        console.print(f"wrote {out}")


@app.command("exchangeability")
def exchangeability_cmd(
    model: Model = "smollm2-135m", benchmark: Bench = "slake-en", split: Split = "test",
    text_column: TextColumn = None, no_header: NoHeader = False,
    shards: Annotated[int, typer.Option(help="Contiguous shards (reference 50).")] = 50,
    permutations: Annotated[int, typer.Option(help="Random orders per shard (reference 250).")] = 250,
    context: Annotated[int, typer.Option(help="Window length in tokens (reference 2048).")] = 2048,
    stride: Annotated[int, typer.Option(help="Window step in tokens (reference 1024).")] = 1024,
    max_examples: Annotated[int, typer.Option(help="First N examples (reference 5000).")] = 5000,
    seed: Annotated[int, typer.Option(help="Permutation seed.")] = 0,
    batch_tokens: Annotated[int, typer.Option(help="Tokens per forward.")] = 4096,
    group_by: Annotated[str | None, typer.Option(
        help="Column whose equal values mark items that belong together: runs of consecutive such items are "
             "permuted as whole blocks. Default: the benchmark's known structure (SLAKE img_id, "
             "glue-mrpc-sentences pair, a table's 'group' column); 'none': single items.")] = None,
    device: Device = "auto", dtype: Dtype = "float32",
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON.")] = None,
) -> None:
    """Oren et al.'s sharded permutation test: is the canonical order more likely than shuffles? On a
    vision-language model it runs on the VLM's own language model over the items' text (docs/contamination.md)."""
    from pydantic import ValidationError

    from fmgauge.contamination.benchmarks import load_benchmark, units_of
    from fmgauge.contamination.detect import load_scorer
    from fmgauge.contamination.exchangeability import ExchangeabilityConfig, exchangeability_test
    from fmgauge.core.config import validation_message
    from fmgauge.core.vlm_models import vlm_family

    try:
        cfg = ExchangeabilityConfig(shards=shards, permutations=permutations, context=context, stride=stride,
                                    max_examples=max_examples, seed=seed, max_batch_tokens=batch_tokens)
    except ValidationError as e:
        raise FmgaugeError(validation_message(e, source="exchangeability options", options={
            "shards": "--shards", "permutations": "--permutations", "context": "--context", "stride": "--stride",
            "max_examples": "--max-examples", "seed": "--seed", "max_batch_tokens": "--batch-tokens"})) from None
    if out is not None:
        check_output_file(out, option="--out")
    bench = load_benchmark(_bench_name(benchmark, text_column, no_header), split)
    unit_col, units = units_of(bench, group_by)
    if unit_col is None and bench.unit_column is not None:
        console.print(f"[yellow]--group-by none: {bench.name} groups its items by {bench.unit_column!r}, so its "
                      "canonical order carries structure any LM can use; permuting single items, the test may "
                      "fire without exposure.[/]")
    tm = load_scorer(model, device=_validate_device(device, dtype), dtype=dtype)
    if vlm_family(model) is not None:
        tm = tm.text_model()
        console.print(f"{model} is a vision-language model: exchangeability scores the item texts with its own "
                      "language model (text only; the image set is the same in every order).")
    res = exchangeability_test(tm, bench.texts, cfg, units=units, unit_name=unit_col)
    console.print(f"{model} on {bench.name}/{split}: {res.n_examples} examples in {len(res.shard_sizes)} shards, "
                  f"{permutations} permutations each of the {res.units}"
                  + (f" ({res.n_blocks} blocks)" if units is not None else "") + f": t = {res.t:.3f}, p = "
                  f"{res.p:.4g} (permutation-calibrated; Student-t p_t = {res.p_t:.4g}, df = "
                  f"{len(res.shard_sizes) - 1}); {res.sequences_scored} sequences scored in {res.seconds:.0f} s")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res.to_dict(), indent=1, default=float))
        console.print(f"wrote {out}")


@app.command("topk")
def topk_cmd(
    models: Annotated[str, typer.Option(help="Comma-separated models (at least 2).")],
    benchmark: Bench = "slake-en", split: Split = "test", max_items: MaxItems = None,
    text_column: TextColumn = None, no_header: NoHeader = False,
    top: Annotated[int | None, typer.Option(help="K (default 10% of the items).", min=1)] = None,
    detector: Annotated[str, typer.Option(help="loss|zlib|mink|minkpp.")] = "minkpp",
    k: Annotated[float, typer.Option(help="Min-K% fraction.", min=0, max=1)] = 0.2,
    image_root: ImageRoot = None, blank_images: BlankImages = False,
    device: Device = "auto", dtype: Dtype = "float32",
) -> None:
    """Cross-model top-K overlap of the most member-like items, against the hypergeometric null (causal LMs
    and vision-language models may be mixed)."""
    import pandas as pd

    from fmgauge.contamination.detect import topk_overlap

    names = [m.strip() for m in models.split(",") if m.strip()]
    ov = topk_overlap(names, _bench_name(benchmark, text_column, no_header), split=split, max_items=max_items,
                      top=top, detector=detector, k=k, image_root=image_root, blank_images=blank_images,
                      device=_validate_device(device, dtype), dtype=dtype)
    from fmgauge.contamination.audit_result import label

    df = pd.DataFrame([o.to_dict() for o in ov]).assign(model_a=lambda d: d.model_a.map(label),
                                                         model_b=lambda d: d.model_b.map(label))
    console.print(_table(df, f"top-K overlap on {benchmark}/{split}"))


@app.command("audit")
def audit_cmd(
    config: Annotated[Path, typer.Option(help="Audit YAML (see configs/contamination/).")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<name>).")] = None,
    device: Annotated[str | None, typer.Option(help="Override the config's device (auto|cpu|cuda|mps).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Override the config's dtype.")] = None,
    max_items: Annotated[int | None, typer.Option(help="Override the benchmark's max_items.")] = None,
    text_column: TextColumn = None, no_header: NoHeader = False,
    image_root: Annotated[Path | None, typer.Option(help="Override the config's image_root (benchmark images, "
                                                         "for VLMs).")] = None,
    cohort_image_root: Annotated[Path | None, typer.Option(help="Override the config's cohort_image_root.")] = None,
    blank_images: Annotated[bool | None, typer.Option(
        "--blank-images/--no-blank-images", help="Override the config's blank_images (VLMs).")] = None,
    group_by: Annotated[str | None, typer.Option(
        help="Override the config's group_by: the column of items that belong together (relabelled / permuted "
             "whole); 'none' = independent items.")] = None,
) -> None:
    """All detectors, with a known-non-member cohort, a baseline model and multiple-testing correction.

    --text-column / --no-header apply to the config's benchmark; a table cohort takes the same options in its
    name (``cohort: csv:items.csv?text_column=body&header=none``)."""
    from fmgauge.contamination.audit import AuditConfig, run_audit
    from fmgauge.contamination.audit_result import label
    from fmgauge.core.config import load_config

    cfg = load_config(AuditConfig, config, {
        "device": device, "dtype": dtype, "max_items": max_items, "blank_images": blank_images, "group_by": group_by,
        "image_root": None if image_root is None else str(image_root),
        "cohort_image_root": None if cohort_image_root is None else str(cohort_image_root)})
    cfg = cfg.model_copy(update={"benchmark": _bench_name(cfg.benchmark, text_column, no_header)})
    _validate_device(cfg.device, cfg.dtype, config=True)
    run_dir = check_output_dir(out if out is not None else Path("runs") / cfg.name, option="--out")
    with run_lock(run_dir):  # a second audit into the same directory is refused before anything loads
        res = run_audit(cfg, run_dir)
    console.print(_table(res.verdicts().assign(model=lambda d: d.model.map(label)), "verdicts"))
    console.print(f"Report: [bold]{res.run_dir / 'report.html'}[/]")


@app.command("plant")
def plant_cmd(
    config: Annotated[Path | None, typer.Option(help="Plant YAML (optional; options below override it).")] = None,
    model: Annotated[str | None, typer.Option(help="Causal LM to contaminate.")] = None,
    benchmark: Annotated[str | None, typer.Option(help="Benchmark to plant.")] = None,
    split: Annotated[str | None, typer.Option(help="Split the groups come from.")] = None,
    items_per_group: Annotated[int | None, typer.Option(help="Items per group.")] = None,
    duplications: Annotated[str | None, typer.Option(help="Comma-separated counts, e.g. 1,4,16.")] = None,
    text_column: TextColumn = None, no_header: NoHeader = False,
    group_by: Annotated[str | None, typer.Option(
        help="Benchmark column whose equal values stay in one group (e.g. a pair id): member and clean groups are "
             "dealt out whole sets, never splitting one.")] = None,
    method: Annotated[str | None, typer.Option(
        help="full (every weight; default) | lora (adapters r=16, merged) | last-layers.")] = None,
    lr: Annotated[float | None, typer.Option(
        help="AdamW learning rate (default per method: lora 1e-3, full 3e-5, last-layers 1e-3).")] = None,
    doc_items: Annotated[int | None, typer.Option(
        help="Items per training document (default 1: each item its own sequence, as it is scored).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Documents per optimiser step.")] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|mps.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (checkpoint + plant.json + groups/).")] = Path(
        "runs/planted"),
    power: Annotated[bool, typer.Option(help="Then measure each detector's power (power.json).")] = True,
    permutations: Annotated[int, typer.Option(help="Permutations per shard in the power run's exchangeability "
                                                   "test (0 skips it).")] = 20,
) -> None:
    """Positive control: fine-tune on a benchmark split at duplication counts, keep clean splits, measure power."""
    import pandas as pd

    from fmgauge.contamination.plant import PlantConfig, plant, plant_power
    from fmgauge.core.config import load_config

    dups = None if duplications is None else [int(float(v)) for v in _csv_floats(duplications, "--duplications")]
    cfg = load_config(PlantConfig, config, {"model": model, "benchmark": benchmark, "split": split,
                                            "items_per_group": items_per_group, "duplications": dups,
                                            "method": method, "lr": lr, "device": device, "group_by": group_by,
                                            "doc_items": doc_items, "batch_size": batch_size})
    cfg = cfg.model_copy(update={"benchmark": _bench_name(cfg.benchmark, text_column, no_header)})
    _validate_device(cfg.device, config=True)
    with run_lock(check_output_dir(out, option="--out")):
        plant(cfg, out)
    console.print(f"planted checkpoint: [bold]{out}[/] (method {cfg.method}, lr {cfg.lr:g})")
    if power:
        with run_lock(out):
            summary = plant_power(out, exchangeability_permutations=permutations, device=cfg.device)
        t = pd.DataFrame(summary["table"])
        cols = [c for c in ("model", "group", "duplication", "detector", "auroc", "lo", "hi", "enrichment",
                            "enrichment_p", "p") if c in t]
        console.print(_table(t[cols], "detector power (AUROC members vs clean; rows 'planted − base': the planted "
                                      "model's AUROC / enrichment minus the base model's, paired 95% interval)"))
        console.print(f"wrote {out / 'power.json'}")


ImageSetOpt = "a folder of images, a .csv/.tsv/.parquet listing (path[, caption, source_id|pmcid]), a PMC-OA .jsonl " \
              "(image, caption, pmcid) or a MedMNIST <name>.npz[:split]"


@app.command("image-overlap")
def image_overlap_cmd(
    benchmark: Annotated[str, typer.Option(help=f"Benchmark images: {ImageSetOpt}.")],
    reference: Annotated[str, typer.Option(help="Reference corpus (e.g. PMC-OA), same forms; streamed and cached.")],
    control: Annotated[str | None, typer.Option(help="Out-of-domain control images (not in the reference); they set "
                                                     "τ of the same-modality / source-overlap question.")] = None,
    copy_control: Annotated[str | None, typer.Option(help="Same-modality images known to be absent from the reference "
                                                          "(e.g. a held-out split of the benchmark's dataset); they "
                                                          "set τ of the copy question, the headline.")] = None,
    copy_detector: Annotated[str, typer.Option(help="auto (on with --copy-control) | on | off: the trained copy "
                                                    "embedder + verification stage.")] = "auto",
    copy_alpha: Annotated[int, typer.Option(help="Same-modality control images allowed above τ_copy.")] = 0,
    copy_top_k: Annotated[int, typer.Option(help="Copy-embedder candidates verified per image.")] = 10,
    copy_train_images: Annotated[int, typer.Option(help="Reference images the copy embedder trains on.")] = 10_000,
    copy_epochs: Annotated[int, typer.Option(help="Training epochs of the copy embedder.")] = 6,
    embedder: Annotated[str, typer.Option(help="dct (offline near-duplicates), siglip-b16, siglip-so400m, biomedclip, "
                                               "hf-hub:org/repo or local-dir:<path>.")] = "dct",
    alpha: Annotated[int, typer.Option(help="Control images allowed above τ (0: τ = max control similarity).")] = 0,
    top_k: Annotated[int, typer.Option(help="Neighbours kept per image.")] = 5,
    index: Annotated[str, typer.Option(help="exact|ivf|hnsw|auto (auto: exact below --exact-below vectors).")] = "auto",
    exact_below: Annotated[int, typer.Option(help="auto switches to IVF at this many reference vectors.")] = 200_000,
    nprobe: Annotated[int | None, typer.Option(help="IVF cells searched per query (default max(16, nlist/8)).")] = None,
    ef_search: Annotated[int, typer.Option(help="HNSW candidates per query.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Images per embedder call.")] = 64,
    device: Device = "auto", dtype: Dtype = "float32",
    gallery_max: Annotated[int, typer.Option(help="Flagged pairs shown in the gallery, most similar first.")] = 500,
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/image-overlap"),
    progress: Annotated[bool, typer.Option(help="Progress bars while embedding.")] = True,
) -> None:
    """Near-neighbour overlap of benchmark images with a reference corpus, τ from a control, adjudication gallery."""
    from pydantic import ValidationError

    from fmgauge.contamination.copies import CopyConfig
    from fmgauge.contamination.copy_embedder import CopyEmbedderConfig
    from fmgauge.contamination.image_overlap import ImageOverlapConfig, lead_line, prepare, run_image_overlap
    from fmgauge.contamination.neighbours import IndexConfig

    try:
        copy = CopyConfig(detector=copy_detector, alpha=copy_alpha, top_k=copy_top_k,
                          embedder=CopyEmbedderConfig(train_images=copy_train_images, epochs=copy_epochs))
        cfg = ImageOverlapConfig(
            benchmark=benchmark, reference=reference, control=control, copy_control=copy_control, embedder=embedder,
            alpha=alpha, top_k=top_k,
            index=IndexConfig(kind=index, exact_below=exact_below, nprobe=nprobe, ef_search=ef_search),
            batch_size=batch_size, device=device, dtype=dtype, gallery_max=gallery_max, copies=copy)
    except ValidationError as e:
        err = e.errors()[0]
        loc = str(err["loc"][-1])
        name = {"detector": "copy-detector", "alpha": "copy-alpha", "top_k": "copy-top-k",
                "train_images": "copy-train-images", "epochs": "copy-epochs"}.get(loc, loc.replace("_", "-")) \
            if e.title in ("CopyConfig", "CopyEmbedderConfig") else loc.replace("_", "-")
        raise FmgaugeError(f"--{name}: {err['msg']} (got {err.get('input')!r}).") from None
    if cfg.index.kind not in ("exact", "ivf", "hnsw", "auto"):
        raise FmgaugeError(f"--index must be exact, ivf, hnsw or auto, got {cfg.index.kind!r}.")
    _validate_device(cfg.device, cfg.dtype)
    check_output_dir(out, option="--out")
    inputs = prepare(cfg)  # every input checked before anything is embedded
    with run_lock(out):
        res = run_image_overlap(cfg, out, inputs=inputs, progress=progress)
    r = res.results
    _, lead = lead_line(r)
    console.print(lead, markup=False)
    console.print(f"index {r['index']['kind']}" + (f" (recall@1 {r['index']['recall']['recall_at_1']:.3f})"
                                                   if r["index"]["recall"] else "")
                  + f"; automatic labels {r['labels']['counts']}")
    skipped = sum(r[s]["skipped"] for s in ("benchmark", "reference", "control"))
    if skipped:
        console.print(f"{skipped} unreadable image(s) skipped: {res.run_dir / 'skipped.csv'}")
    console.print(f"Report: [bold]{res.run_dir / 'report.html'}[/]; gallery: [bold]{res.run_dir / 'gallery.html'}[/]")


@app.command("gallery")
def gallery_cmd(
    run: Annotated[Path, typer.Argument(help="An image-overlap run directory.")],
    port: Annotated[int, typer.Option(help="Port to serve on (127.0.0.1).")] = 8765,
    import_marks: Annotated[Path | None, typer.Option("--import", help="Merge a marks.json downloaded from the "
                                                                       "static gallery, then exit.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve a run's adjudication gallery (marks saved to RUN/marks.json), or import marks from the static page."""
    from fmgauge.contamination.gallery import import_marks as do_import
    from fmgauge.contamination.gallery import mark_counts, read_pairs, serve
    from fmgauge.contamination.image_overlap import write_report

    if not run.is_dir():
        raise FmgaugeError(f"RUN {run} is not a directory; give an image-overlap run directory.")
    read_pairs(run)
    if import_marks is not None:
        do_import(run, import_marks)
        write_report(run)
        console.print(f"marks: {mark_counts(run)}; report: {run / 'report.html'}")
        return
    if not 0 <= port <= 65535:
        raise FmgaugeError(f"--port must be in 0..65535 (0 picks a free port), got {port}.")
    try:
        server = serve(run, host=host, port=port, on_change=write_report)
    except OSError as e:
        raise FmgaugeError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); pick another "
                           "port or 0 for a free one.") from None
    console.print(f"Gallery of {run} at [bold]http://{host}:{server.server_address[1]}/[/] (Ctrl-C to stop); "
                  f"marks: {mark_counts(run)}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        write_report(run)
