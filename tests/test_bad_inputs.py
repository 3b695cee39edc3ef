"""The bad-input battery: every row is a command line with a bad file or config it builds, which must exit 2 with
one clear line containing a phrase — and no traceback. New commands add rows here.

Files that disappear mid-run are pinned where the run loop lives (tests/test_core_runner.py: the first trial that
hits the missing file stops the run with one line; a rerun resumes)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmgauge import cli


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``fmgauge <args>`` in this process, as the console script runs it: (exit code, stderr)."""
    old = sys.argv
    sys.argv = ["fmgauge", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def _gold_files(tmp: Path, n: int = 20) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    ids = [f"item{i}" for i in range(n)]
    y = np.arange(n) % 2
    pd.DataFrame({"id": ids, "label": np.array(["a", "b"])[y]}).to_csv(tmp / "gold.csv", index=False)
    pd.DataFrame({"id": ids, "p_a": 1 - y * 0.8 - 0.1, "p_b": y * 0.8 + 0.1}).to_csv(tmp / "lab.csv", index=False)
    pd.DataFrame({"id": ids, **{f"f{j}": rng.normal(size=n) for j in range(4)}}).to_csv(tmp / "x.csv", index=False)
    return {"gold": tmp / "gold.csv", "lab": tmp / "lab.csv", "x": tmp / "x.csv"}


def _decide(f: dict[str, Path], **over: Path) -> list[str]:
    f = {**f, **over}
    return ["weak-labels", "decide", "--gold", str(f["gold"]), "--labeler-outputs", str(f["lab"]),
            "--features", str(f["x"])]


def _study(tmp: Path, **over) -> Path:
    cfg = {"name": "bad", "dataset": "pneumoniamnist", "labelers": [{"kind": "simulated"}],
           "students": [{"kind": "logreg"}], "n_gold": [10, 20], **over}
    path = tmp / "study.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def seeds_zero(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=0)), "--out", str(tmp / "run")]


def corrupt_store(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "trials.sqlite").write_bytes(b"this is not a database" * 100)
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "run"),
            "--no-progress"]


def locked_run_dir(tmp: Path) -> list[str]:
    import socket

    (tmp / "run").mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-12-02 10:00:00"}
    (tmp / "run" / ".lock").write_text(json.dumps(holder))
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "run"),
            "--no-progress"]


def gold_unterminated_quote(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    (tmp / "bad.csv").write_text('id,label\nitem0,"a\nitem1,b\n' + "x" * 70_000)
    return _decide(f, gold=tmp / "bad.csv")


def gold_missing(tmp: Path) -> list[str]:
    return _decide(_gold_files(tmp), gold=tmp / "missing.csv")


def gold_empty(tmp: Path) -> list[str]:
    (tmp / "empty.csv").write_text("")
    return _decide(_gold_files(tmp), gold=tmp / "empty.csv")


def gold_one_class(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    pd.DataFrame({"id": [f"item{i}" for i in range(20)], "label": "a"}).to_csv(tmp / "one.csv", index=False)
    return _decide(f, gold=tmp / "one.csv")


def gold_case_clash(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["gold"])
    df.loc[0, "label"] = "A"
    df.to_csv(tmp / "case.csv", index=False)
    return _decide(f, gold=tmp / "case.csv")


def features_with_text(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["x"]).assign(note="free text")
    df.to_csv(tmp / "xt.csv", index=False)
    return _decide(f, x=tmp / "xt.csv")


def features_with_nan(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["x"])
    df.loc[3, "f1"] = np.nan
    df.to_csv(tmp / "xn.csv", index=False)
    return _decide(f, x=tmp / "xn.csv")


def empty_model_dir(tmp: Path) -> list[str]:
    (tmp / "model").mkdir()
    return ["weak-labels", "label", "--dataset", "medical-abstracts-neoplasms", "--labeler",
            f"text-embedding:{tmp / 'model'}"]


def _quantize_run(tmp: Path, *args: str) -> list[str]:
    """A quantize run on a model directory that does not exist: a refusal naming the argument proves the check
    happened before any model load (loading would fail with a different message)."""
    return ["quantize", "run", "--model", str(tmp / "no-model"), "--out", str(tmp / "q"), *args]


def quant_bits_9(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--bits", "9")


def quant_bits_1(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--bits", "1")


def quant_group_100(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--group-size", "100")


def quant_method_typo(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--method", "gtpq")


def quant_format_unknown(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--format", "onnx")


def quant_gguf_3bit(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--format", "gguf", "--bits", "3")


def quant_mixed_as_ct(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--method", "mixed", "--format", "compressed-tensors")


def quant_sampling_typo(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--sampling", "chunks")


def quant_compare_bits_9(tmp: Path) -> list[str]:
    return ["quantize", "compare", "--model", str(tmp / "no-model"), "--bits", "3,9", "--out", str(tmp / "c")]


def quant_compare_group_100(tmp: Path) -> list[str]:
    return ["quantize", "compare", "--model", str(tmp / "no-model"), "--group-size", "100", "--out", str(tmp / "c")]


def _quant_compare(tmp: Path, *args: str) -> list[str]:
    return ["quantize", "compare", "--model", str(tmp / "no-model"), "--out", str(tmp / "c"), *args]


def quant_compare_unknown_peer(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--peers", "autoawq")


def quant_compare_peers_without_counterpart(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--methods", "rtn,sens-gptq", "--peers", "llmcompressor")


def quant_compare_missing_peers_python(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--methods", "gptq", "--peers", "llmcompressor", "--peers-python",
                          str(tmp / "no-venv" / "bin" / "python"))


def quant_compare_peers_python_without_peer(tmp: Path) -> list[str]:
    """fmgauge's own interpreter has no llmcompressor (it pins other versions)."""
    return _quant_compare(tmp, "--methods", "gptq", "--peers", "llmcompressor", "--peers-python", sys.executable)


def masking_single_file_task(tmp: Path) -> list[str]:
    pd.DataFrame({"sentence": [f"text {i}" for i in range(20)], "label": np.arange(20) % 2}).to_csv(
        tmp / "task.csv", index=False)
    return ["masking", "compare", "--task", str(tmp / "task.csv"), "--model", "minilm-l6", "--seeds", "2"]


def masking_headerless_task(tmp: Path) -> list[str]:
    (tmp / "task.csv").write_text("".join(f"some text {i},{i % 2}\n" for i in range(20)))
    return ["masking", "compare", "--task", str(tmp / "task.csv"), "--model", "minilm-l6", "--seeds", "2"]


def masking_headerless_by_position(tmp: Path) -> list[str]:
    """--no-header with column positions reaches the split check: the columns were found."""
    (tmp / "task.csv").write_text("".join(f"some text {i},{i % 2}\n" for i in range(20)))
    return ["masking", "compare", "--task", str(tmp / "task.csv"), "--no-header", "--text-columns", "0",
            "--label-column", "1", "--seeds", "2"]


def masking_headerless_without_positions(tmp: Path) -> list[str]:
    (tmp / "task.csv").write_text("".join(f"some text {i},{i % 2}\n" for i in range(20)))
    return ["masking", "compare", "--task", str(tmp / "task.csv"), "--no-header", "--seeds", "2"]


def masking_strategy_typo(tmp: Path) -> list[str]:
    return ["masking", "compare", "--task", "mrpc", "--strategies", "random,typhon", "--seeds", "2"]


def study_dataset_typo(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, dataset="pneumonia")), "--out", str(tmp / "r")]


def study_student_typo(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, students=[{"kind": "logreg2"}])), "--out",
            str(tmp / "r")]


def labeler_outputs_with_inf(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["lab"])
    df.loc[4, "p_b"] = np.inf
    df.to_csv(tmp / "inf.csv", index=False)
    return _decide(f, lab=tmp / "inf.csv")


def _bench_csv(tmp: Path, text: str = "body,x\nhello world,1\nanother one,2\n") -> str:
    (tmp / "bench.csv").write_text(text)
    return f"csv:{tmp / 'bench.csv'}"


def bench_text_column_missing(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp), "--text-column", "nope"]


def bench_no_text_column(tmp: Path) -> list[str]:
    return ["contamination", "exchangeability", "--benchmark", _bench_csv(tmp)]


def bench_no_header_on_fixed_layout(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", "slake-en", "--no-header"]


def bench_option_typo(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp) + "?text_colum=body"]


def bench_headerless_named_column(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp), "--no-header", "--text-column", "body"]


def bench_empty_file(tmp: Path) -> list[str]:
    return ["contamination", "exchangeability", "--benchmark", _bench_csv(tmp, "")]


def bench_model_typo(tmp: Path) -> list[str]:
    return ["contamination", "topk", "--models", "smollm2-135,smollm2-135m", "--benchmark", _bench_csv(tmp),
            "--text-column", "body"]


def bench_layout_typo(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp).replace("csv:", "cvs:")]


def study_report_of_empty_dir(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    return ["weak-labels", "report", str(tmp / "run")]


def masking_report_of_empty_dir(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    return ["masking", "report", str(tmp / "run")]


def audit_config_missing(tmp: Path) -> list[str]:
    return ["contamination", "audit", "--config", str(tmp / "missing.yaml")]


def audit_config_incomplete(tmp: Path) -> list[str]:
    (tmp / "a.yaml").write_text("name: x\nmodel: smollm2-135m\nbenchmark: slake-en\n")
    return ["contamination", "audit", "--config", str(tmp / "a.yaml")]


def plant_empty_benchmark(tmp: Path) -> list[str]:
    return ["contamination", "plant", "--model", "smollm2-135m", "--benchmark", _bench_csv(tmp, ""), "--out",
            str(tmp / "planted")]


def _plant(tmp: Path, *args: str, bench: str | None = None) -> list[str]:
    return ["contamination", "plant", "--model", "smollm2-135m", "--benchmark", bench or _bench_csv(tmp), "--out",
            str(tmp / "planted"), *args]


def plant_method_typo(tmp: Path) -> list[str]:
    return _plant(tmp, "--method", "ful", "--text-column", "body")


def plant_lr_zero(tmp: Path) -> list[str]:
    return _plant(tmp, "--method", "full", "--lr", "0")


def plant_group_by_missing(tmp: Path) -> list[str]:
    return _plant(tmp, "--text-column", "body", "--group-by", "pair", "--items-per-group", "4")


def plant_group_by_one_value(tmp: Path) -> list[str]:
    rows = "".join(f"question {i},p{i // 20}\n" for i in range(40))
    return _plant(tmp, "--text-column", "body", "--group-by", "x", "--items-per-group", "4", "--method", "full",
                  bench=_bench_csv(tmp, "body,x\n" + rows))


def plant_text_column_missing(tmp: Path) -> list[str]:
    return _plant(tmp, "--text-column", "nope", "--method", "full")


def plant_no_header_on_fixed_layout(tmp: Path) -> list[str]:
    return _plant(tmp, "--no-header", bench="slake-en")


def plant_benchmark_typo(tmp: Path) -> list[str]:
    return _plant(tmp, bench="slake")


def _audit_yaml(tmp: Path, **over: str) -> str:
    cfg = {"models": ["smollm2-135m"], "baseline": "gemma3-270m", "benchmark": _bench_csv(tmp), "split": "all",
           "cohort": _bench_csv(tmp) + "?text_column=body", "cohort_split": "all", **over}
    (tmp / "audit.yaml").write_text(json.dumps(cfg))
    return str(tmp / "audit.yaml")


def exchangeability_group_by_missing(tmp: Path) -> list[str]:
    return ["contamination", "exchangeability", "--benchmark", _bench_csv(tmp), "--text-column", "body",
            "--group-by", "pair"]


def audit_group_by_missing(tmp: Path) -> list[str]:
    (tmp / "cohort.csv").write_text("text\nsomething else\nand more\n")
    return ["contamination", "audit", "--config", _audit_yaml(tmp, group_by="pair", cohort=f"csv:{tmp / 'cohort.csv'}"),
            "--text-column", "body", "--out", str(tmp / "run")]


def plant_doc_items_zero(tmp: Path) -> list[str]:
    return _plant(tmp, "--text-column", "body", "--doc-items", "0")


def audit_text_column_missing(tmp: Path) -> list[str]:
    return ["contamination", "audit", "--config", _audit_yaml(tmp), "--text-column", "nope", "--out",
            str(tmp / "run")]


def audit_no_header_on_fixed_layout(tmp: Path) -> list[str]:
    return ["contamination", "audit", "--config", _audit_yaml(tmp, benchmark="slake-en"), "--no-header", "--out",
            str(tmp / "run")]


def audit_benchmark_typo(tmp: Path) -> list[str]:
    return ["contamination", "audit", "--config", _audit_yaml(tmp, benchmark="vqa-rad2"), "--out", str(tmp / "run")]


def score_empty_model_dir(tmp: Path) -> list[str]:
    (tmp / "model").mkdir()
    return ["contamination", "score", "--model", str(tmp / "model"), "--benchmark", _bench_csv(tmp), "--text-column",
            "body"]


def exchangeability_empty_model_dir(tmp: Path) -> list[str]:
    (tmp / "model").mkdir()
    return ["contamination", "exchangeability", "--model", str(tmp / "model"), "--benchmark", _bench_csv(tmp),
            "--text-column", "body"]


def label_no_header_on_registered(tmp: Path) -> list[str]:
    return ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", "simulated:random", "--no-header"]


def label_option_twice(tmp: Path) -> list[str]:
    (tmp / "w.csv").write_text("flu,fever and aches\ncold,runny nose\n")
    return ["weak-labels", "label", "--dataset", f"text:{tmp / 'w.csv'}?header=none", "--labeler",
            "simulated:random", "--no-header"]


def decide_text_column_without_dataset(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--text-column", "body"]


MEDMNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist"


def _overlap(tmp: Path, **over: str) -> list[str]:
    """image-overlap on real MedMNIST npz sets (a few images written as a folder for the benchmark)."""
    from PIL import Image

    bench = tmp / "bench"
    if not bench.exists():
        bench.mkdir()
        with np.load(MEDMNIST / "pneumoniamnist.npz") as z:
            for i, a in enumerate(z["test_images"][:4]):
                Image.fromarray(a).save(bench / f"b{i}.png")
    args = {"benchmark": str(bench), "reference": f"{MEDMNIST / 'pneumoniamnist.npz'}:val",
            "control": f"{MEDMNIST / 'breastmnist.npz'}:test", "out": str(tmp / "run"), **over}
    return ["contamination", "image-overlap", *[x for k, v in args.items() for x in (f"--{k}", v)]]


def overlap_embedder_typo(tmp: Path) -> list[str]:
    return _overlap(tmp, embedder="dtc")


def overlap_embedder_offline(tmp: Path) -> list[str]:
    return _overlap(tmp, embedder="siglip-so400m")


def overlap_missing_benchmark(tmp: Path) -> list[str]:
    return _overlap(tmp, benchmark=str(tmp / "nowhere"))


def overlap_listing_without_path(tmp: Path) -> list[str]:
    pd.DataFrame({"file": ["a.png"]}).to_csv(tmp / "ref.csv", index=False)
    return _overlap(tmp, reference=str(tmp / "ref.csv"))


def overlap_npz_bad_split(tmp: Path) -> list[str]:
    return _overlap(tmp, control=f"{MEDMNIST / 'breastmnist.npz'}:dev")


def overlap_empty_reference_folder(tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return _overlap(tmp, reference=str(tmp / "empty"))


def overlap_unreadable_reference(tmp: Path) -> list[str]:
    (tmp / "broken").mkdir()
    for i in range(3):
        (tmp / "broken" / f"x{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return _overlap(tmp, reference=str(tmp / "broken"))


def overlap_alpha_too_large(tmp: Path) -> list[str]:
    return _overlap(tmp, alpha="156")


def overlap_index_typo(tmp: Path) -> list[str]:
    return _overlap(tmp, index="hnws")


def overlap_top_k_zero(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"top-k": "0"})


def gallery_not_a_run(tmp: Path) -> list[str]:
    return ["contamination", "gallery", str(tmp)]


def gallery_import_bad_mark(tmp: Path) -> list[str]:
    (tmp / "gallery").mkdir()
    (tmp / "gallery" / "pairs.json").write_text(json.dumps([{"pair": "b0.png|r1.png"}]))
    (tmp / "marks.json").write_text(json.dumps({"marks": {"b0.png|r1.png": {"mark": "dupe"}}}))
    return ["contamination", "gallery", str(tmp), "--import", str(tmp / "marks.json")]


def gallery_port_out_of_range(tmp: Path) -> list[str]:
    (tmp / "gallery").mkdir()
    (tmp / "gallery" / "pairs.json").write_text("[]")
    return ["contamination", "gallery", str(tmp), "--port", "70000"]
def _vqa_csv(tmp: Path, *, images: bool = True) -> str:
    """A question/answer csv benchmark, with an image column of real PNG files next to it when ``images``."""
    from PIL import Image

    rows = ["question,answer" + (",image" if images else "")]
    for i in range(4):
        if images:
            Image.new("RGB", (28, 28), (i * 40, 0, 0)).save(tmp / f"im{i}.png")
        rows.append(f"what organ {i}?,lung" + (f",im{i}.png" if images else ""))
    (tmp / "vqa.csv").write_text("\n".join(rows) + "\n")
    return f"csv:{tmp / 'vqa.csv'}"


def vlm_on_text_benchmark(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "qwen2.5-vl-3b", "--benchmark", _bench_csv(tmp, "text\na\nb\n")]


def vlm_on_benchmark_without_images(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "qwen2.5-vl-3b", "--benchmark", _vqa_csv(tmp, images=False)]


def vlm_without_image_root(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "qwen2.5-vl-3b", "--benchmark", "slake-en", "--max-items", "5"]


def vlm_image_root_without_the_images(tmp: Path) -> list[str]:
    (tmp / "imgs").mkdir()
    return ["contamination", "topk", "--models", "qwen2.5-vl-3b,blip2-opt-2.7b", "--benchmark", "slake-en",
            "--image-root", str(tmp / "imgs")]


def vlm_image_root_not_a_dir(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "blip2-opt-2.7b", "--benchmark", "vqamed2019", "--image-root",
            str(tmp / "nope")]


def vlm_offline_without_weights(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "blip2-opt-2.7b", "--benchmark", _vqa_csv(tmp)]


def vlm_reference_is_a_text_lm(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "qwen2.5-vl-3b", "--reference-model", "smollm2-135m",
            "--benchmark", _vqa_csv(tmp)]


def vlm_name_typo(tmp: Path) -> list[str]:
    return ["contamination", "score", "--model", "qwen2.5-vl-3", "--benchmark", _vqa_csv(tmp)]


def vlm_audit_without_image_root(tmp: Path) -> list[str]:
    cfg = {"name": "v", "models": ["qwen2.5-vl-3b"], "baseline": "blip2-opt-2.7b", "benchmark": "slake-en",
           "cohort": "vqamed2019", "image_root": None}
    (tmp / "a.yaml").write_text(json.dumps(cfg))
    return ["contamination", "audit", "--config", str(tmp / "a.yaml"), "--out", str(tmp / "run")]


BATTERY: list[tuple[Callable[[Path], list[str]], str]] = [
    (masking_single_file_task, "has splits ['train'], not ['dev', 'test']"),
    (masking_headerless_task, "a file without a header row needs --no-header"),
    (masking_headerless_by_position, "has splits ['train'], not ['dev', 'test']"),
    (masking_headerless_without_positions, "has no header row (columns ['0', '1']): name the sentence column(s) by "
                                           "position with --text-columns 0[,1]"),
    (masking_strategy_typo, "Did you mean 'typhoon'?"),
    (study_dataset_typo, "Did you mean 'pneumoniamnist'?"),
    (study_student_typo, "Did you mean 'logreg'"),
    (labeler_outputs_with_inf, "hold NaN, inf or negative values in 1 row(s) (first data rows [4]"),
    (bench_text_column_missing, "missing required field(s) ['nope']; it has ['body', 'x']"),
    (bench_no_text_column, "name the text column with --text-column"),
    (bench_no_header_on_fixed_layout, "--no-header applies to a benchmark file named jsonl|csv|tsv:<path>"),
    (bench_option_typo, "Did you mean 'text_column'"),
    (bench_headerless_named_column, "with header=none, text_column must be a column position"),
    (bench_empty_file, "holds no items (empty benchmark)"),
    (bench_model_typo, "Did you mean 'smollm2-135m'?"),
    (bench_layout_typo, "Or a file: csv:<path>, jsonl:<path>"),
    (study_report_of_empty_dir, "has no summary.json: run `fmgauge weak-labels calibrate` into it first"),
    (masking_report_of_empty_dir, "is not a run directory: it has no config.yaml"),
    (audit_config_missing, "missing.yaml does not exist"),
    (audit_config_incomplete, "models: Field required"),
    (plant_empty_benchmark, "holds no items (empty benchmark)"),
    (plant_method_typo, "method: Input should be 'lora', 'last-layers' or 'full' (got 'ful')"),
    (plant_lr_zero, "lr: Input should be greater than 0"),
    (plant_group_by_missing, "has no such column; available columns: ['body', 'x']"),
    (plant_group_by_one_value, "group_by 'x': the benchmark's 40 items form 2 groups of that column; kept whole, "
                               "they fill 2 of 5 groups of 4 items"),
    (plant_text_column_missing, "missing required field(s) ['nope']; it has ['body', 'x']"),
    (plant_no_header_on_fixed_layout, "--no-header applies to a benchmark file named jsonl|csv|tsv:<path>"),
    (plant_benchmark_typo, "Did you mean 'slake-en'? Known: glue-mrpc, glue-mrpc-sentences, omnimedvqa, pathvqa, "
                           "slake-en, vqa-rad, vqamed2019. Or a file: csv:<path>, jsonl:<path>, mevf:<path>"),
    (audit_text_column_missing, "missing required field(s) ['nope']; it has ['body', 'x']"),
    (audit_no_header_on_fixed_layout, "--no-header applies to a benchmark file named jsonl|csv|tsv:<path>"),
    (audit_benchmark_typo, "unknown benchmark 'vqa-rad2'. Did you mean 'vqa-rad', 'vqamed2019'? Known: glue-mrpc, "
                           "glue-mrpc-sentences, omnimedvqa, pathvqa, slake-en, vqa-rad, vqamed2019. Or a file: "
                           "csv:<path>, jsonl:<path>"),
    (exchangeability_group_by_missing, "--group-by 'pair': benchmark 'bench' ("),
    (audit_group_by_missing, "group_by 'pair': benchmark 'bench' ("),
    (plant_doc_items_zero, "doc_items: Input should be greater than or equal to 1"),
    (score_empty_model_dir, "has no config.json; save the model with save_pretrained() or give a registered name "
                            "['gemma3-270m', 'minilm-l6', 'smollm2-135m']"),
    (exchangeability_empty_model_dir, "or give a registered name ['gemma3-270m', 'minilm-l6', 'smollm2-135m']"),
    (label_no_header_on_registered, "--no-header: only for a text:<file> dataset; 'pneumoniamnist'"),
    (label_option_twice, "option 'header' is given twice"),
    (decide_text_column_without_dataset, "describe a --dataset text:<file>"),
    (seeds_zero, "seeds must be a number of seeds >= 1"),
    (corrupt_store, "is not a readable trial store"),
    (locked_run_dir, "is in use by pid"),
    (gold_unterminated_quote, "gold file"),
    (gold_missing, "gold file"),
    (gold_empty, "could not be read"),
    (gold_one_class, "holds a single class"),
    (gold_case_clash, "differ only in case"),
    (features_with_text, "hold text"),
    (features_with_nan, "NaN"),
    (empty_model_dir, "has no config.json; save the model with save_pretrained() or give a registered name ["),
    (quant_bits_9, "bits must be an integer in 2..8, got 9"),
    (quant_bits_1, "bits must be an integer in 2..8, got 1"),
    (quant_group_100, "group_size must be one of 32, 64, 128, -1"),
    (quant_method_typo, "Did you mean 'gptq'"),
    (quant_format_unknown, "format: Input should be 'compressed-tensors'"),
    (quant_gguf_3bit, "format gguf cannot store 3-bit weights with group size 128"),
    (quant_mixed_as_ct, "nearest valid setting: --mixed-unit layer (or --group-size -1), or --format fmgauge"),
    (quant_sampling_typo, "calib.sampling: Input should be 'random' or 'consecutive'"),
    (quant_compare_bits_9, "bits must be an integer in 2..8, got 9"),
    (quant_compare_group_100, "group_size must be one of 32, 64, 128, -1"),
    (quant_compare_unknown_peer, "unknown peer 'autoawq'; expected one of llmcompressor"),
    (quant_compare_peers_without_counterpart, "--methods must include gptq or awq"),
    (quant_compare_missing_peers_python, "does not exist; build it with `make peers`"),
    (quant_compare_peers_python_without_peer, "cannot import llmcompressor"),
    (overlap_embedder_typo, "unknown embedder 'dtc'. Did you mean 'dct'?"),
    (overlap_embedder_offline, "needs the weights of hf-hub:timm/ViT-SO400M-14-SigLIP, which are not in the Hugging"),
    (overlap_missing_benchmark, "nowhere' does not exist; give a folder of images, a .csv/.tsv/.parquet listing"),
    (overlap_listing_without_path, "has no 'path' column; it has ['file']"),
    (overlap_npz_bad_split, "has no split 'dev'; it has ['train', 'val', 'test']"),
    (overlap_empty_reference_folder, "holds no image files"),
    (overlap_unreadable_reference, "none of its 3 images could be read (empty reference set)"),
    (overlap_alpha_too_large, "--alpha 156 must be below the number of control images (156)"),
    (overlap_index_typo, "--index must be exact, ivf, hnsw or auto, got 'hnws'"),
    (overlap_top_k_zero, "--top-k: Input should be greater than or equal to 1"),
    (gallery_not_a_run, "has no gallery/pairs.json: run `fmgauge contamination image-overlap"),
    (gallery_import_bad_mark, "must be one of ['duplicate', 'same-source', 'different']"),
    (gallery_port_out_of_range, "--port must be in 0..65535"),
    (vlm_on_text_benchmark, "has no question/answer fields; a vision-language model scores the answer given image"),
    (vlm_on_benchmark_without_images, "names no image for its items"),
    (vlm_without_image_root, "--image-root: benchmark 'slake-en' names its images relative to a folder"),
    (vlm_image_root_without_the_images, "1061 of 1061 images of 'slake-en' are missing"),
    (vlm_image_root_not_a_dir, "is not a directory; point it at the folder holding the benchmark's images"),
    (vlm_offline_without_weights, "huggingface-cli download Salesforce/blip2-opt-2.7b --local-dir DIR`), copy DIR "
                                  "here and pass --model DIR"),
    (vlm_reference_is_a_text_lm, "the reference ratio needs two models scoring the same tokens"),
    (vlm_name_typo, "unknown model 'qwen2.5-vl-3'. Did you mean 'qwen2.5-vl-3b'"),
    (vlm_audit_without_image_root, "--image-root: benchmark 'slake-en' names its images relative to a folder"),
]


@pytest.mark.parametrize("build, phrase", BATTERY, ids=[b.__name__ for b, _ in BATTERY])
def test_bad_input_exits_2_with_one_clear_line(build, phrase, tmp_path, capsys, fmgauge_env):
    code, err = run_cli(build(tmp_path), capsys)
    assert code == 2, err
    assert phrase in " ".join(err.split()), err
    assert "Traceback" not in err


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    import socket
    import subprocess

    from fmgauge.core.store import LOCK, run_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()
    assert "taking over the lock" in caplog.text
