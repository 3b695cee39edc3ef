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


def label_no_header_on_registered(tmp: Path) -> list[str]:
    return ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", "simulated:random", "--no-header"]


def label_option_twice(tmp: Path) -> list[str]:
    (tmp / "w.csv").write_text("flu,fever and aches\ncold,runny nose\n")
    return ["weak-labels", "label", "--dataset", f"text:{tmp / 'w.csv'}?header=none", "--labeler",
            "simulated:random", "--no-header"]


def decide_text_column_without_dataset(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--text-column", "body"]


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
    (quant_mixed_as_ct, "nearest valid setting: --method sens-gptq --bits 4, or --format fmgauge"),
    (quant_sampling_typo, "calib.sampling: Input should be 'random' or 'consecutive'"),
    (quant_compare_bits_9, "bits must be an integer in 2..8, got 9"),
    (quant_compare_group_100, "group_size must be one of 32, 64, 128, -1"),
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
