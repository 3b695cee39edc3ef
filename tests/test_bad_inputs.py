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

from conftest import SHARED_DATA
from fmgauge import cli


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``fmgauge <args>`` in this process, as the console script runs it: (exit code, stderr)."""
    code, _, err = run_cli_all(args, capsys)
    return code, err


def run_cli_all(args: list[str], capsys) -> tuple[int, str, str]:
    """``fmgauge <args>`` in this process, as the console script runs it: (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["fmgauge", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(out: str, err: str, phrase: str) -> str:
    """The refusal is ONE ``error:`` line holding ``phrase`` verbatim (so not wrapped), the last thing on stderr,
    nothing on stdout, and no traceback or multi-line dump anywhere; returns the line."""
    assert "Traceback" not in out + err, out + err
    assert not out.strip(), f"stdout of a refusal should be empty, got {out!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], f"something follows the error line (a dump?):\n{err}"
    assert phrase in errors[0], err
    return errors[0]


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


def quant_mixed_default_format(tmp: Path) -> list[str]:
    """Per-group mixed precision only fits fmgauge's big format: never written by default."""
    return _quantize_run(tmp, "--method", "mixed")


def quant_embeddings_typo(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--format", "gguf", "--embeddings", "drop")


def quant_eval_engine_typo(tmp: Path) -> list[str]:
    return ["quantize", "eval", str(tmp / "no-model"), "--engine", "vllm"]


def quant_eval_llama_without_gguf(tmp: Path) -> list[str]:
    (tmp / "ct").mkdir()
    return ["quantize", "eval", str(tmp / "ct"), "--engine", "llama.cpp"]


def quant_eval_llama_without_build(tmp: Path) -> list[str]:
    (tmp / "g").mkdir()
    (tmp / "g" / "model.gguf").write_bytes(b"GGUF")
    return ["quantize", "eval", str(tmp / "g"), "--engine", "llama.cpp", "--llama-root", str(tmp / "no-build")]


def quant_compare_llama_type_typo(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--peers", "llama.cpp", "--llama-types", "Q4_0,Q4_K_X")


def quant_compare_llama_imatrix_typo(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--peers", "llama.cpp", "--llama-imatrix", "none,sensitivity")


def quant_compare_llama_windows_one(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--peers", "llama.cpp", "--llama-windows", "1")


def quant_compare_llama_without_build(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--peers", "llama.cpp", "--llama-root", str(tmp / "no-build"))


def quant_run_k_bits_4(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--k-bits", "4")


def quant_run_k_bits_compressed_tensors(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--k-bits", "3", "--format", "compressed-tensors")


def quant_run_gguf_group_128(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--format", "gguf", "--group-size", "128")


def quant_run_group_does_not_divide_width(tmp: Path) -> list[str]:
    """A model directory with a config and no weights: the group size is refused from the config's widths (the
    load would fail with a different message, so this proves the check comes first)."""
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=96, intermediate_size=160, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=300).save_pretrained(tmp / "config-only")
    return ["quantize", "run", "--model", str(tmp / "config-only"), "--out", str(tmp / "q"), "--method", "rtn",
            "--group-size", "64", "--format", "compressed-tensors"]


def quant_run_calib_shorter_than_a_window(tmp: Path) -> list[str]:
    (tmp / "short.txt").write_text("a few words")
    return _quantize_run(tmp, "--method", "gptq", "--calib", str(tmp / "short.txt"), "--seqlen", "64")


def quant_compare_k_bits_4(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--k-bits", "4")


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


def _sample(tmp: Path, *extra: str) -> list[str]:
    f = _gold_files(tmp)
    return ["weak-labels", "sample-gold", "--labeler-outputs", str(f["lab"]), "--out", str(tmp / "g.csv"), *extra]


def sample_gold_allocation_typo(tmp: Path) -> list[str]:
    return _sample(tmp, "--allocation", "sqr")


def sample_gold_m_zero(tmp: Path) -> list[str]:
    return _sample(tmp, "--m", "0")


def sample_gold_m_beyond_the_items(tmp: Path) -> list[str]:
    return _sample(tmp, "--m", "500")


def sample_gold_m_below_two_per_class(tmp: Path) -> list[str]:
    return _sample(tmp, "--m", "3")


def sample_gold_out_not_csv(tmp: Path) -> list[str]:
    return [*_sample(tmp)[:-2], "--out", str(tmp / "g.parquet")]


def sample_gold_outputs_missing(tmp: Path) -> list[str]:
    return ["weak-labels", "sample-gold", "--labeler-outputs", str(tmp / "none.csv"), "--out", str(tmp / "g.csv")]


def sample_gold_exclude_without_id(tmp: Path) -> list[str]:
    pd.DataFrame({"name": ["item1"]}).to_csv(tmp / "ex.csv", index=False)
    return _sample(tmp, "--exclude", str(tmp / "ex.csv"))


def decide_fallback_typo(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--fallback", "weakest"]


def decide_primary_typo(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--primary", "projections"]


def decide_negative_weight(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    g = pd.read_csv(f["gold"]).assign(weight=1.0)
    g.loc[3, "weight"] = -2.0
    g.to_csv(tmp / "wg.csv", index=False)
    return _decide(f, gold=tmp / "wg.csv")


def decide_text_column_without_dataset(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--text-column", "body"]


MEDMNIST = SHARED_DATA / "medmnist"


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


def overlap_no_control_at_all(tmp: Path) -> list[str]:
    args = _overlap(tmp)
    i = args.index("--control")
    return args[:i] + args[i + 2:]


def overlap_copy_control_missing(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"copy-control": str(tmp / "nowhere")})


def overlap_copy_detector_typo(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"copy-detector": "yes"})


def overlap_copy_control_with_detector_off(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"copy-control": f"{MEDMNIST / 'pneumoniamnist.npz'}:test", "copy-detector": "off"})


def overlap_copy_alpha_too_large(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"copy-control": f"{MEDMNIST / 'breastmnist.npz'}:val", "copy-alpha": "78"})


def overlap_copy_top_k_zero(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"copy-top-k": "0"})


def overlap_copy_epochs_zero(tmp: Path) -> list[str]:
    return _overlap(tmp, **{"copy-epochs": "0"})


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


# ---------------------------------------------------------------- issue 26: options, configs and files, round two

def label_labeler_noise_unknown(tmp: Path) -> list[str]:
    return ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", "simulated:gaussian"]


def label_accuracy_above_one(tmp: Path) -> list[str]:
    return ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", "simulated:random", "--accuracy", "1.5"]


def label_accuracy_with_file_labeler(tmp: Path) -> list[str]:
    return ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", f"file:{tmp / 'x.csv'}",
            "--accuracy", "0.8"]


def label_out_is_a_directory(tmp: Path) -> list[str]:
    return ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", "simulated:random", "--out", str(tmp)]


def calibrate_yaml_syntax(tmp: Path) -> list[str]:
    (tmp / "s.yaml").write_text("name: x\ndataset: [pneumoniamnist\nseeds: 1\n")
    return ["weak-labels", "calibrate", "--config", str(tmp / "s.yaml"), "--out", str(tmp / "run")]


def calibrate_config_not_a_mapping(tmp: Path) -> list[str]:
    (tmp / "s.yaml").write_text("- just\n- a list\n")
    return ["weak-labels", "calibrate", "--config", str(tmp / "s.yaml"), "--out", str(tmp / "run")]


def calibrate_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "run").write_text("not a directory")
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "run")]


def calibrate_out_under_a_file(tmp: Path) -> list[str]:
    (tmp / "f").write_text("a file")
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "f" / "run")]


def calibrate_workers_zero(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "run"),
            "--workers", "0"]


def calibrate_n_gold_not_numbers(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--n-gold", "10,lots"]


def audit_yaml_syntax(tmp: Path) -> list[str]:
    (tmp / "a.yaml").write_text("models: [smollm2-135m\nbaseline: x\n")
    return ["contamination", "audit", "--config", str(tmp / "a.yaml")]


def audit_config_is_a_directory(tmp: Path) -> list[str]:
    (tmp / "cfgdir").mkdir()
    return ["contamination", "audit", "--config", str(tmp / "cfgdir")]


def exchangeability_shards_zero(tmp: Path) -> list[str]:
    return ["contamination", "exchangeability", "--benchmark", _bench_csv(tmp), "--text-column", "body",
            "--shards", "0"]


def exchangeability_out_is_a_directory(tmp: Path) -> list[str]:
    return ["contamination", "exchangeability", "--benchmark", _bench_csv(tmp), "--text-column", "body",
            "--out", str(tmp)]


def score_out_is_a_directory(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp), "--text-column", "body", "--out", str(tmp)]


def bench_headerless_csv(tmp: Path) -> list[str]:
    return ["contamination", "exchangeability", "--benchmark", _bench_csv(tmp, "hello world,1\nanother one,2\n")]


def decide_proxy_unknown(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--proxy", "foo"]


def decide_primary_unknown(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--primary", "foo"]


def decide_representation_unknown(tmp: Path) -> list[str]:
    return ["weak-labels", "decide", "--gold", str(_gold_files(tmp)["gold"]), "--labeler-outputs",
            str(tmp / "lab.csv"), "--dataset", "pneumoniamnist", "--representation", "foo"]


def decide_json_is_a_directory(tmp: Path) -> list[str]:
    return [*_decide(_gold_files(tmp)), "--json", str(tmp)]


def decide_features_text_named_npz(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    (tmp / "x.npz").write_text((tmp / "x.csv").read_text())
    return _decide(f, x=tmp / "x.npz")


def decide_features_truncated_npz(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    np.savez(tmp / "x.npz", ids=np.array([f"item{i}" for i in range(20)]), features=np.zeros((20, 4)))
    data = (tmp / "x.npz").read_bytes()
    (tmp / "x.npz").write_bytes(data[: len(data) // 2])
    return _decide(f, x=tmp / "x.npz")


def decide_gold_label_not_in_labeler(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["gold"])
    df.loc[5, "label"] = "bb"  # a typo in the gold file: the labeler has p_a, p_b
    df.to_csv(tmp / "typo.csv", index=False)
    return _decide(f, gold=tmp / "typo.csv")


def decide_gold_id_two_labels(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["gold"])
    df = pd.concat([df, pd.DataFrame({"id": ["item3"], "label": ["a"]})])  # item3 is 'b' above
    df.to_csv(tmp / "twice.csv", index=False)
    return _decide(f, gold=tmp / "twice.csv")


def masking_empty_text_rows(tmp: Path) -> list[str]:
    rows = [f"some text {i}" if i % 7 else "  " for i in range(20)]
    pd.DataFrame({"sentence": rows, "label": np.arange(20) % 2}).to_csv(tmp / "task.csv", index=False)
    return ["masking", "compare", "--task", str(tmp / "task.csv"), "--seeds", "2"]


def masking_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "run").write_text("x")
    return ["masking", "compare", "--task", "mrpc", "--seeds", "2", "--out", str(tmp / "run")]


def masking_yaml_syntax(tmp: Path) -> list[str]:
    (tmp / "m.yaml").write_text("task: mrpc\nmasking: {rate: 0.15\n")
    return ["masking", "compare", "--config", str(tmp / "m.yaml")]


def masking_config_bad_rate(tmp: Path) -> list[str]:
    (tmp / "m.yaml").write_text("task: mrpc\nmasking:\n  rate: 2.0\n")
    return ["masking", "compare", "--config", str(tmp / "m.yaml"), "--seeds", "2"]


def quant_run_n_samples_zero(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--method", "gptq", "--n-samples", "0")


def quant_run_calib_missing_rtn(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--method", "rtn", "--calib", str(tmp / "missing.txt"))


def quant_run_calib_missing_gptq(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--method", "gptq", "--calib", str(tmp / "missing.txt"))


def quant_run_config_n_samples_zero(tmp: Path) -> list[str]:
    (tmp / "q.yaml").write_text("calib:\n  n_samples: 0\n")
    return _quantize_run(tmp, "--config", str(tmp / "q.yaml"))


def quant_run_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "q").write_text("x")
    return _quantize_run(tmp, "--method", "rtn")


def _config_only_model(tmp: Path, layers: int = 2) -> str:
    """A model directory holding only a config.json (no weights): a refusal proves nothing was loaded."""
    from transformers import LlamaConfig

    d = tmp / "cfg-model"
    d.mkdir(exist_ok=True)
    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                num_attention_heads=2, num_key_value_heads=1).to_json_file(d / "config.json")
    return str(d)


def quant_sensitivity_blocks_out_of_range(tmp: Path) -> list[str]:
    return ["quantize", "sensitivity", "--model", _config_only_model(tmp), "--blocks", "0,99", "--out",
            str(tmp / "s")]


def quant_sensitivity_calib_missing(tmp: Path) -> list[str]:
    return ["quantize", "sensitivity", "--model", _config_only_model(tmp), "--calib", str(tmp / "missing.txt"),
            "--out", str(tmp / "s")]


def quant_sensitivity_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "s").write_text("x")
    return ["quantize", "sensitivity", "--model", _config_only_model(tmp), "--out", str(tmp / "s")]


def quant_eval_context_zero(tmp: Path) -> list[str]:
    return ["quantize", "eval", _config_only_model(tmp), "--context", "0"]


def quant_eval_stride_above_context(tmp: Path) -> list[str]:
    return ["quantize", "eval", _config_only_model(tmp), "--context", "64", "--stride", "65"]


def quant_eval_text_missing(tmp: Path) -> list[str]:
    return ["quantize", "eval", _config_only_model(tmp), "--text", str(tmp / "missing.txt")]


def quant_eval_out_is_a_directory(tmp: Path) -> list[str]:
    return ["quantize", "eval", _config_only_model(tmp), "--out", str(tmp)]


def quant_compare_n_samples_zero(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--n-samples", "0")


def quant_report_not_a_run(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    return ["quantize", "report", str(tmp / "run")]


def quant_report_corrupt_config(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("model: [smollm2\n")
    return ["quantize", "report", str(tmp / "run")]


def _finished_study_dir(tmp: Path) -> Path:
    """A weak-labels run directory as calibrate leaves it (config, store, summary, results), no training."""
    from fmgauge.core.store import RunStore

    run = tmp / "run"
    store = RunStore(run, lock=False)
    store.save_config({"name": "bad", "dataset": "pneumoniamnist"})
    store.write_json("summary.json", {"meta": {}, "crossovers": []})
    store.write_results(pd.DataFrame({"labeler": ["x"], "n_gold": [10], "auc": [0.7]}))
    store.close()
    return run


def study_report_truncated_summary(tmp: Path) -> list[str]:
    run = _finished_study_dir(tmp)
    (run / "summary.json").write_text('{"meta": {"fmgauge": "0.1", "se')
    return ["weak-labels", "report", str(run)]


def study_report_truncated_results(tmp: Path) -> list[str]:
    run = _finished_study_dir(tmp)
    data = (run / "results.parquet").read_bytes()
    (run / "results.parquet").write_bytes(data[: len(data) // 2])
    return ["weak-labels", "report", str(run)]


def study_report_results_rebuild_hint(tmp: Path) -> list[str]:
    return study_report_truncated_results(tmp)


def masking_report_corrupt_config(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("task: [mrpc\n")
    return ["masking", "report", str(tmp / "run")]


def gallery_corrupt_pairs(tmp: Path) -> list[str]:
    (tmp / "gallery").mkdir()
    (tmp / "gallery" / "pairs.json").write_text('[{"pair": "b0.png|r1.png", "simil')
    return ["contamination", "gallery", str(tmp)]


def overlap_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "run").write_text("x")
    return _overlap(tmp)


def plant_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "planted").write_text("x")
    return _plant(tmp, "--text-column", "body", "--method", "full")


def audit_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "run").write_text("x")
    return ["contamination", "audit", "--config", _audit_yaml(tmp), "--text-column", "body", "--out",
            str(tmp / "run")]


def topk_top_zero(tmp: Path) -> list[str]:
    return ["contamination", "topk", "--models", "smollm2-135m,gemma3-270m", "--benchmark", _bench_csv(tmp),
            "--text-column", "body", "--top", "0"]


def score_batch_tokens_zero(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp), "--text-column", "body", "--batch-tokens", "0"]


def score_context_zero(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp), "--text-column", "body", "--context", "0"]


def score_dtype_unknown(tmp: Path) -> list[str]:
    return ["contamination", "score", "--benchmark", _bench_csv(tmp), "--text-column", "body", "--dtype", "float8"]


def masking_device_unavailable(tmp: Path) -> list[str]:
    return ["masking", "compare", "--task", "mrpc", "--seeds", "2", "--device", "cuda:7"]


def masking_backend_unknown(tmp: Path) -> list[str]:
    return ["masking", "compare", "--task", "mrpc", "--seeds", "2", "--backend", "dask"]


def calibrate_backend_unknown(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--backend", "dask"]


def quant_run_dtype_unknown(tmp: Path) -> list[str]:
    return _quantize_run(tmp, "--dtype", "int4")


def quant_compare_empty_bits(tmp: Path) -> list[str]:
    return _quant_compare(tmp, "--bits", "")


def quant_eval_reference_missing(tmp: Path) -> list[str]:
    return ["quantize", "eval", _config_only_model(tmp), "--reference", str(tmp / "no-reference")]


def masking_config_seeds_not_a_number(tmp: Path) -> list[str]:
    (tmp / "m.yaml").write_text("task: mrpc\nseeds: many\n")
    return ["masking", "compare", "--config", str(tmp / "m.yaml")]


def unknown_command(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrat"]


def option_not_a_number(tmp: Path) -> list[str]:
    return ["quantize", "eval", _config_only_model(tmp), "--context", "big"]


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
    (plant_doc_items_zero, "--doc-items: Input should be greater than or equal to 1"),
    (score_empty_model_dir, "has no config.json; save the model with save_pretrained() or give a registered name "
                            "['gemma3-270m', 'minilm-l6', 'smollm2-135m']"),
    (exchangeability_empty_model_dir, "or give a registered name ['gemma3-270m', 'minilm-l6', 'smollm2-135m']"),
    (label_no_header_on_registered, "--no-header: only for a text:<file> dataset; 'pneumoniamnist'"),
    (label_option_twice, "option 'header' is given twice"),
    (decide_text_column_without_dataset, "describe a --dataset text:<file>"),
    (sample_gold_allocation_typo, "--allocation must be one of ['sqrt', 'proportional', 'equal'], got 'sqr'"),
    (sample_gold_m_zero, "--m"),
    (sample_gold_m_beyond_the_items, "m = 500 gold items asked for but the labeler labelled only 20 items"),
    (sample_gold_m_below_two_per_class, "m = 3 is too small to put 2 gold items into each of the labeler's 2"),
    (sample_gold_out_not_csv, "--out must be a .csv file"),
    (sample_gold_outputs_missing, "none.csv"),
    (sample_gold_exclude_without_id, "needs an id column; it has ['name']"),
    (decide_fallback_typo, "--fallback must be auto, labeler, weak or lean, got 'weakest'. Did you mean 'weak'?"),
    (decide_primary_typo, "--primary must be one of"),
    (decide_negative_weight, "column weight must hold positive numbers"),
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
    (quant_gguf_3bit, "format gguf cannot store 3-bit weights with group size 32"),
    (quant_mixed_as_ct, "nearest valid setting: --mixed-unit layer (or --group-size -1), or --format fmgauge"),
    (quant_sampling_typo, "--sampling: Input should be 'random' or 'consecutive' (got 'chunks')"),
    (quant_compare_bits_9, "bits must be an integer in 2..8, got 9"),
    (quant_compare_group_100, "group_size must be one of 32, 64, 128, -1"),
    (quant_compare_unknown_peer, "unknown peer 'autoawq'; expected one of llmcompressor"),
    (quant_compare_peers_without_counterpart, "--methods must include gptq or awq"),
    (quant_compare_missing_peers_python, "does not exist; build it with `make peers`"),
    (quant_compare_peers_python_without_peer, "cannot import llmcompressor"),
    (quant_mixed_default_format, "pass --format fmgauge explicitly, or --mixed-unit layer"),
    (quant_embeddings_typo, "embeddings: Input should be 'quantize' or 'keep'"),
    (quant_eval_engine_typo, "--engine must be one of transformers, llama.cpp, got 'vllm'"),
    (quant_eval_llama_without_gguf, "--engine llama.cpp scores a GGUF file"),
    (quant_eval_llama_without_build, "--engine llama.cpp: no llama.cpp build at"),
    (quant_compare_llama_type_typo, "unknown llama-quantize type 'Q4_K_X'"),
    (quant_compare_llama_imatrix_typo, "unknown importance matrix 'sensitivity'"),
    (quant_compare_llama_without_build, "--peers llama.cpp: no llama.cpp build at"),
    (quant_compare_llama_windows_one, "--llama-windows: Input should be greater than or equal to 2"),
    (quant_run_k_bits_4, "--k-bits: k_bits must be one of 3, 6 (Q3_K, Q6_K), got 4"),
    (quant_run_k_bits_compressed_tensors, "format compressed-tensors has no K-quant blocks; --k-bits 3 writes GGUF"),
    (quant_run_gguf_group_128, "format gguf cannot store 4-bit weights with group size 128"),
    (quant_compare_k_bits_4, "--k-bits must be one of 3, 6 (Q3_K, Q6_K), got 4"),
    (quant_run_group_does_not_divide_width, "group size 64 does not divide 96"),
    (quant_run_calib_shorter_than_a_window, "--seqlen: calibration text"),
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
    (overlap_no_control_at_all, "--control and --copy-control are both missing"),
    (overlap_copy_control_missing, "--copy-control '"),
    (overlap_copy_detector_typo, "--copy-detector must be auto, on or off, got 'yes'"),
    (overlap_copy_control_with_detector_off, "--copy-control needs the copy detector"),
    (overlap_copy_alpha_too_large, "--copy-alpha 78 must be below the number of --copy-control images (78)"),
    (overlap_copy_top_k_zero, "--copy-top-k: Input should be greater than or equal to 1"),
    (overlap_copy_epochs_zero, "--copy-epochs: Input should be greater than or equal to 1"),
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
    # issue 26
    (label_labeler_noise_unknown, "invalid --labeler simulated:gaussian: simulated:<noise>: Input should be 'random', "
                                  "'class-conditional' or 'instance' (got 'gaussian')"),
    (label_accuracy_above_one, "--accuracy: Input should be less than or equal to 1 (got 1.5)"),
    (label_accuracy_with_file_labeler, "--accuracy sets a simulated labeler's accuracy"),
    (label_out_is_a_directory, "is a directory; give a file name"),
    (calibrate_yaml_syntax, "s.yaml is not valid YAML: "),
    (calibrate_config_not_a_mapping, "must hold a mapping at top level, got list (write key: value lines)"),
    (calibrate_out_is_a_file, "run is a file, not a directory"),
    (calibrate_out_under_a_file, "cannot be created: "),
    (calibrate_workers_zero, "Invalid value for '--workers'"),
    (calibrate_n_gold_not_numbers, "--n-gold must be comma-separated integers"),
    (audit_yaml_syntax, "a.yaml is not valid YAML: "),
    (audit_config_is_a_directory, "cfgdir is a directory; give a YAML file"),
    (exchangeability_shards_zero, "--shards: Input should be greater than or equal to 2 (got 0)"),
    (exchangeability_out_is_a_directory, "is a directory; give a file name"),
    (score_out_is_a_directory, "is a directory; give a file name"),
    (bench_headerless_csv, "--no-header (?header=none)"),
    (decide_proxy_unknown, "--proxy must be one of sk-logreg, logreg, mlp, got 'foo'"),
    (decide_primary_unknown, "--primary must be one of accuracy, auc, cv-delta, delta-worth, weak-student, projection, got 'foo'"),
    (decide_representation_unknown, "--representation must be raw, tfidf or embed:<model>"),
    (decide_json_is_a_directory, "--json"),
    (decide_features_text_named_npz, "x.npz is not a .npz archive: it is a text file (it starts with 'id,f0"),
    (decide_features_truncated_npz, "x.npz is corrupt or incomplete"),
    (decide_gold_label_not_in_labeler, "typo.csv has label(s) ['bb'] that the labeler-outputs file"),
    (decide_gold_id_two_labels, "twice.csv gives 1 id(s) two or more different labels, e.g. id 'item3': ['a', 'b']"),
    (masking_empty_text_rows, "3 row(s) have an empty sentence column 'sentence' (first rows [0, 7, 14]"),
    (masking_out_is_a_file, "run is a file, not a directory"),
    (masking_yaml_syntax, "m.yaml is not valid YAML"),
    (masking_config_bad_rate, "m.yaml: masking.rate: Input should be less than 1 (got 2.0)"),
    (quant_run_n_samples_zero, "Invalid value for '--n-samples'"),
    (quant_run_calib_missing_rtn, "--calib: must be 'wikitext2' or an existing UTF-8 text file"),
    (quant_run_calib_missing_gptq, "--calib: must be 'wikitext2' or an existing UTF-8 text file"),
    (quant_run_config_n_samples_zero, "q.yaml: calib.n_samples: Input should be greater than or equal to 1 (got 0)"),
    (quant_run_out_is_a_file, "q is a file, not a directory"),
    (quant_sensitivity_blocks_out_of_range, "--blocks [99] out of range:"),
    (quant_sensitivity_calib_missing, "--calib: must be 'wikitext2' or an existing UTF-8 text file"),
    (quant_sensitivity_out_is_a_file, "s is a file, not a directory"),
    (quant_eval_context_zero, "Invalid value for '--context'"),
    (quant_eval_stride_above_context, "--stride must be at most --context (64), got 65"),
    (quant_eval_text_missing, "--text must be 'wikitext2' or an existing UTF-8 text file"),
    (quant_eval_out_is_a_directory, "is a directory; give a file name"),
    (quant_compare_n_samples_zero, "Invalid value for '--n-samples'"),
    (quant_report_not_a_run, "is not a `quantize compare` run directory"),
    (quant_report_corrupt_config, "config.yaml is corrupt or incomplete (ParserError: expected ',' or ']', but got "
                                  "'<stream end>' at line 2, column 1"),
    (study_report_truncated_summary, "summary.json is corrupt or incomplete (JSONDecodeError"),
    (study_report_truncated_results, "results.parquet is corrupt or incomplete (ArrowInvalid"),
    (study_report_results_rebuild_hint, "rebuild it with `fmgauge weak-labels calibrate --config "),
    (masking_report_corrupt_config, "config.yaml is corrupt or incomplete"),
    (gallery_corrupt_pairs, "pairs.json is corrupt or incomplete"),
    (overlap_out_is_a_file, "run is a file, not a directory"),
    (plant_out_is_a_file, "planted is a file, not a directory"),
    (audit_out_is_a_file, "run is a file, not a directory"),
    (topk_top_zero, "Invalid value for '--top'"),
    (score_batch_tokens_zero, "Invalid value for '--batch-tokens'"),
    (score_context_zero, "Invalid value for '--context'"),
    (score_dtype_unknown, "--dtype must be one of float32, float16, bfloat16, auto, got 'float8'"),
    (masking_device_unavailable, "--device: device 'cuda:7' requested but"),
    (masking_backend_unknown, "--backend must be local or ray, got 'dask'"),
    (calibrate_backend_unknown, "--backend must be local or ray, got 'dask'"),
    (quant_run_dtype_unknown, "--dtype must be one of float32, float16, bfloat16, auto, got 'int4'"),
    (quant_compare_empty_bits, "--bits needs at least one integer"),
    (quant_eval_reference_missing, "no-reference' is not a directory with a transformers config.json"),
    (masking_config_seeds_not_a_number, "m.yaml: seeds: Input should be a valid integer, unable to parse string as "
                                        "an integer, or a valid list (got 'many')"),
    (unknown_command, "No such command 'calibrat'"),
    (option_not_a_number, "Invalid value for '--context'"),
]


@pytest.mark.parametrize("build, phrase", BATTERY, ids=[b.__name__ for b, _ in BATTERY])
def test_bad_input_exits_2_with_one_clear_line(build, phrase, tmp_path, capsys, fmgauge_env):
    code, out, err = run_cli_all(build(tmp_path), capsys)
    assert code == 2, err
    assert_one_error_line(out, err, phrase)


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


# ------------------------------------------------------------------------------------------------------------------
# Issue 26, faults: a refused run changes nothing; unwritable outputs; corrupt files; Ctrl-C; one line in a real
# process (non-TTY and TTY); the gallery server's Host/Origin/token checks.

def _tree_hash(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with the sha256 of its bytes (directories: "dir")."""
    import hashlib

    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def _held_by_another_process(run: Path) -> None:
    """``run`` as a finished run directory whose lock a live process (pytest's parent) holds."""
    import socket

    from fmgauge.core.store import LOCK, RunStore

    store = RunStore(run, lock=False)
    store.save_config({"name": "earlier", "seeds": 3})
    store.record("t1", {"a": 1}, [{"auc": 0.7}], 1.0)
    store.write_json("splits.json", {"pool": ["a"], "test": ["b"]})
    store.write_json("summary.json", {"meta": {}})
    store.close()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-12-06 10:00:00"}
    (run / LOCK).write_text(json.dumps(holder))


LOCKED_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "calibrate": lambda tmp, run: ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=2)), "--out",
                                   str(run), "--no-progress"],
    "masking-compare": lambda tmp, run: ["masking", "compare", "--task", "mrpc", "--seeds", "2", "--out", str(run)],
    "quantize-run": lambda tmp, run: ["quantize", "run", "--model", str(tmp / "no-model"), "--method", "rtn",
                                      "--out", str(run)],
    "quantize-compare": lambda tmp, run: ["quantize", "compare", "--model", str(tmp / "no-model"), "--out", str(run)],
    "quantize-sensitivity": lambda tmp, run: ["quantize", "sensitivity", "--model", _config_only_model(tmp),
                                              "--out", str(run)],
    "image-overlap": lambda tmp, run: _overlap(tmp, out=str(run)),
    "audit": lambda tmp, run: ["contamination", "audit", "--config", _audit_yaml(tmp), "--text-column", "body",
                               "--out", str(run)],
    "plant": lambda tmp, run: ["contamination", "plant", "--model", "smollm2-135m", "--benchmark", _bench_csv(tmp),
                               "--text-column", "body", "--method", "full", "--out", str(run)],
}


@pytest.mark.parametrize("command", list(LOCKED_COMMANDS))
def test_a_refused_run_leaves_every_byte_of_the_run_directory(command, tmp_path, capsys, fmgauge_env):
    run = tmp_path / "run"
    _held_by_another_process(run)
    before = _tree_hash(run)
    code, out, err = run_cli_all(LOCKED_COMMANDS[command](tmp_path, run), capsys)
    assert code == 2, err
    assert_one_error_line(out, err, f"run directory {run} is in use by pid {os.getppid()}")
    assert _tree_hash(run) == before


def test_calibrate_from_python_takes_the_lock_before_writing(tmp_path, fmgauge_env):
    """The library entry (not only the CLI): calibrate() on a held directory writes no config.yaml/splits.json."""
    from fmgauge.core.config import load_config
    from fmgauge.core.validation import FmgaugeError
    from fmgauge.weaklabels.study import StudyConfig, calibrate

    run = tmp_path / "run"
    _held_by_another_process(run)
    before = _tree_hash(run)
    with pytest.raises(FmgaugeError, match="is in use by pid"):
        calibrate(load_config(StudyConfig, _study(tmp_path, seeds=2)), run, progress=False)
    assert _tree_hash(run) == before


def test_a_failed_run_frees_its_directory_and_leaves_no_empty_one(tmp_path, capsys, fmgauge_env):
    run = tmp_path / "new-run"
    code, _, err = run_cli_all(["weak-labels", "calibrate", "--config", str(_study(tmp_path, dataset="pneumonia")),
                                "--out", str(run)], capsys)
    assert code == 2 and "Did you mean 'pneumoniamnist'" in err
    assert not run.exists()  # refused before anything was written: the locked-then-empty directory is gone


@pytest.fixture
def unwritable(tmp_path):
    """A directory this process cannot write into (read-only mode bits; as root, whom mode bits do not stop, the
    immutable attribute too). Skipped where neither applies."""
    import shutil
    import subprocess

    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode != 0:
            d.chmod(0o755)
            pytest.skip("running as root without chattr +i: cannot make a directory unwritable")
        immutable = True
    try:
        yield d
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(d)], capture_output=True)
        d.chmod(0o755)


UNWRITABLE: dict[str, Callable[[Path, Path], list[str]]] = {
    "calibrate": lambda tmp, out: ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out",
                                   str(out)],
    "image-overlap": lambda tmp, out: _overlap(tmp, out=str(out)),
    "masking-compare": lambda tmp, out: ["masking", "compare", "--task", "mrpc", "--seeds", "2", "--out", str(out)],
    "quantize-run": lambda tmp, out: ["quantize", "run", "--model", "smollm2-135m", "--method", "rtn", "--out",
                                      str(out)],
    "quantize-sensitivity": lambda tmp, out: ["quantize", "sensitivity", "--model", _config_only_model(tmp),
                                              "--out", str(out)],
    "quantize-compare": lambda tmp, out: ["quantize", "compare", "--model", "smollm2-135m", "--out", str(out)],
    "plant": lambda tmp, out: ["contamination", "plant", "--model", "smollm2-135m", "--benchmark", _bench_csv(tmp),
                               "--text-column", "body", "--method", "full", "--out", str(out)],
    "label-out": lambda tmp, out: ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler",
                                   "simulated:random", "--out", str(out / "labels.csv")],
}


@pytest.mark.parametrize("command", list(UNWRITABLE))
@pytest.mark.parametrize("where", ["inside", "itself"])
def test_an_unwritable_output_is_refused_before_any_model_loads(command, where, unwritable, tmp_path, capsys,
                                                                 fmgauge_env):
    out = unwritable / "run" if where == "inside" else unwritable
    if command == "label-out" and where == "itself":
        pytest.skip("--out of label is a file")
    code, stdout, err = run_cli_all(UNWRITABLE[command](tmp_path, out), capsys)
    assert code == 2, err
    assert_one_error_line(stdout, err, "is not writable")
    assert not (fmgauge_env / "models").exists()  # no model was converted or loaded


def test_a_truncated_labeler_cache_is_moved_aside_and_recomputed(tmp_path, capsys, caplog, fmgauge_env):
    args = ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler", "simulated:random"]
    assert run_cli_all([*args, "--out", str(tmp_path / "a.csv")], capsys)[0] == 0
    cached = sorted((fmgauge_env / "labels").glob("*.npz"))
    assert cached
    for f in cached:
        f.write_bytes(f.read_bytes()[:100])  # a partial write
    code, _, err = run_cli_all([*args, "--out", str(tmp_path / "b.csv")], capsys)
    assert code == 0, err
    assert "is corrupt" in caplog.text and "moved it to" in caplog.text and "recomputing it" in caplog.text
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert list((fmgauge_env / "labels").glob("*.corrupt-*"))


def test_a_truncated_embedding_chunk_is_moved_aside_and_recomputed(tmp_path, capsys, caplog, fmgauge_env):
    assert run_cli_all([*_overlap(tmp_path), "--no-progress"], capsys)[0] == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    chunks = sorted((fmgauge_env / "image-embeddings").glob("*/chunk-*.npz"))
    assert chunks
    chunks[0].write_bytes(chunks[0].read_bytes()[:500])
    code, _, err = run_cli_all([*_overlap(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    assert "embedding cache chunk" in caplog.text and "is corrupt" in caplog.text
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["tau"] == first["tau"] and again["benchmark"]["flagged"] == first["benchmark"]["flagged"]


def test_calibration_options_given_to_rtn_are_said_to_be_ignored(tmp_path, capsys, caplog, fmgauge_env):
    (tmp_path / "calib.txt").write_text("some text " * 100)
    code, _, err = run_cli_all(_quantize_run(tmp_path, "--method", "rtn", "--calib", str(tmp_path / "calib.txt"),
                                             "--n-samples", "4"), capsys)
    assert code == 2 and "no-model" in err  # then the missing model is refused
    assert "rtn reads no calibration text; ignoring --calib, --n-samples" in caplog.text


def test_truncated_model_weights_are_named_not_a_traceback(tiny_dir, tmp_path, capsys, fmgauge_env):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    w = model / "model.safetensors"
    w.write_bytes(w.read_bytes()[:2000])
    code, out, err = run_cli_all(["quantize", "eval", str(model), "--kl-windows", "0", "--max-windows", "1"], capsys)
    assert code == 2, err
    assert_one_error_line(out, err, f"the weight files of model '{model}' are corrupt or incomplete "
                                    "(SafetensorError")


def test_ctrl_c_in_a_long_loop_says_where_it_stopped_and_how_to_resume(tmp_path, capsys, monkeypatch, fmgauge_env):
    """Ctrl-C (KeyboardInterrupt) while image-overlap embeds: exit 130, the done/left count and the command."""
    from fmgauge.contamination import embedders

    calls = {"n": 0}
    real = embedders.DCTEmbedder.embed

    def embed(self, images):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(embedders.DCTEmbedder, "embed", embed)
    args = [*_overlap(tmp_path), "--no-progress", "--batch-size", "16"]
    code, out, err = run_cli_all(args, capsys)
    assert code == 130, err
    assert "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert "interrupted (embedding " in line and " image done, " in line and " to go)" in line, err
    assert f"rerun `fmgauge {' '.join(args)}` to resume." in line, err


def _run_fmgauge(args: list[str], env: dict[str, str], **kw):  # noqa: ANN202
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "fmgauge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _env(cache: Path) -> dict[str, str]:
    from conftest import SHARED_DATA

    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "FMGAUGE_CACHE": str(cache), "FMGAUGE_DATA": str(SHARED_DATA), "FMGAUGE_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


SUBPROCESS_ROWS = [calibrate_yaml_syntax, quant_eval_context_zero,
                   study_report_truncated_summary]  # a config, a usage error, a corrupt file


def test_refusals_are_one_line_on_stdout_and_stderr_of_a_real_process(tmp_path):
    """A representative subset as real processes (all at once): stdout + stderr of the whole process tree hold ONE
    line, the error, whatever the terminal width."""
    phrases = dict(BATTERY)
    procs = []
    for build in SUBPROCESS_ROWS:
        tmp = tmp_path / build.__name__
        tmp.mkdir()
        procs.append((build, _run_fmgauge(build(tmp), {**_env(tmp / "cache"), "COLUMNS": "40"})))
    for build, proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, (build.__name__, err)
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (build.__name__, out + err)
        assert phrases[build] in lines[0], (build.__name__, lines[0])


def test_an_error_stays_one_line_on_a_narrow_terminal(tmp_path):
    """On a TTY (rich colours, a 40-column terminal) the error line is not wrapped either."""
    import pty
    import re
    import select
    import subprocess

    master, slave = pty.openpty()
    env = {**_env(tmp_path / "cache"), "COLUMNS": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "fmgauge", *quant_eval_context_zero(tmp_path)], env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            break
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line for line in text.replace("\r", "").splitlines() if line.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--context': Input should be greater "
                                                   "than or equal to 2 (see `fmgauge quantize eval --help`)"), lines


def test_ctrl_c_of_a_real_study_prints_the_saved_count_and_the_resume_command(tmp_path):
    """SIGINT to a running `weak-labels calibrate` (the process group: driver and pool workers, as a terminal's
    Ctrl-C does): exit 130, "N of M trials are saved", the exact command to resume, no traceback from any process,
    and no worker left behind."""
    import re
    import signal
    import sqlite3
    import time

    cfg = _study(tmp_path, seeds=6, n_gold=[10, 20, 40, 80], seed_batch=1, n_boot=0, cleanlab=False,
                 conditions=["gold", "gold+weak"])
    run = tmp_path / "run"
    args = ["weak-labels", "calibrate", "--config", str(cfg), "--out", str(run), "--workers", "2"]  # a pool
    proc = _run_fmgauge(args, _env(tmp_path / "cache"), start_new_session=True)  # its own process group
    deadline = time.time() + 600
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            with sqlite3.connect(run / "trials.sqlite") as db:
                done = db.execute("SELECT count(*) FROM trials WHERE status='done'").fetchone()[0]
        except sqlite3.Error:
            continue
        if done >= 1:
            break
    assert proc.poll() is None, "the study finished before it could be interrupted; give it more trials"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err, err
    last = err.strip().splitlines()[-1]
    assert re.search(r"interrupted; \d+ of \d+ trials are saved in ", last), last
    assert f"rerun `fmgauge {' '.join(args)}` to resume." in last, last
    left = _group_members(proc.pid, wait=60)
    assert not left, f"processes of the interrupted run still alive: {left}"


def _group_members(pgid: int, *, wait: float) -> list[str]:
    """Command lines of the live processes in process group ``pgid`` (zombies excluded), polled until none are left
    or ``wait`` seconds passed."""
    import time

    deadline = time.time() + wait
    while True:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    left.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
            except (OSError, ValueError, IndexError):
                continue
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)


# ------------------------------------------------------------------ the gallery server: who may read and write

def _gallery_run(tmp: Path) -> Path:
    (tmp / "gallery").mkdir()
    (tmp / "gallery" / "pairs.json").write_text(json.dumps([{"pair": "b0.png|r1.png"}, {"pair": "b1.png|r2.png"}]))
    (tmp / "gallery.html").write_text("<html><head><title>g</title></head><body>api/marks</body></html>")
    return tmp


@pytest.fixture
def gallery(tmp_path):
    import threading

    from fmgauge.contamination.gallery import serve

    server = serve(_gallery_run(tmp_path), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _request(server, method: str, path: str, *, body: dict | None = None, headers: dict | None = None):  # noqa: ANN202
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def test_gallery_marks_need_the_runs_token_and_its_own_origin(gallery, tmp_path):
    from fmgauge.contamination.gallery import load_marks, token_cookie

    port = gallery.server_address[1]
    mark = {"pair": "b0.png|r1.png", "mark": "duplicate"}
    assert _request(gallery, "POST", "/api/marks", body=mark)[0] == 403  # no token
    assert _request(gallery, "POST", "/api/marks", body=mark, headers={"X-Fmgauge-Token": "guess"})[0] == 403
    evil = {"X-Fmgauge-Token": gallery.token, "Origin": "http://evil.example"}
    assert _request(gallery, "POST", "/api/marks", body=mark, headers=evil)[0] == 403  # another page
    rebound = {"X-Fmgauge-Token": gallery.token, "Host": f"evil.example:{port}"}
    assert _request(gallery, "POST", "/api/marks", body=mark, headers=rebound)[0] == 403  # DNS rebinding
    assert _request(gallery, "GET", "/api/marks", headers={"Host": f"evil.example:{port}"})[0] == 403
    assert load_marks(tmp_path) == {}  # nothing was written
    status, headers, page = _request(gallery, "GET", "/")  # the page hands out the token: cookie and meta tag
    assert status == 200 and f'<meta name="fmgauge-token" content="{gallery.token}">'.encode() in page
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie == f"{token_cookie(port)}={gallery.token}" and "SameSite=Strict" in headers["Set-Cookie"]
    own = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    assert _request(gallery, "POST", "/api/marks", body=mark, headers=own)[0] == 200  # the page's own fetch
    assert _request(gallery, "POST", "/api/marks", body={"pair": "b1.png|r2.png", "mark": "different"},
                    headers={"X-Fmgauge-Token": gallery.token})[0] == 200  # or the header, e.g. from a script
    assert {k: v["mark"] for k, v in load_marks(tmp_path).items()} == {"b0.png|r1.png": "duplicate",
                                                                       "b1.png|r2.png": "different"}
    assert b"fmgauge-token" not in (tmp_path / "gallery.html").read_bytes()  # the file on disk holds no token


def test_a_client_hanging_up_mid_request_prints_no_traceback(gallery, tmp_path, capfd):
    import socket
    import time

    port = gallery.server_address[1]
    (tmp_path / "gallery" / "big.png").write_bytes(os.urandom(8_000_000))  # more than the socket buffers hold
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /gallery/big.png HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        s.recv(100)  # the reply has started...
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # ...and the client resets the connection (the old server printed a BrokenPipe traceback)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /api/marks HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 1000\r\n\r\n{" % port)
        s.close()  # mid-body
    time.sleep(0.5)
    assert _request(gallery, "GET", "/api/marks")[0] == 200  # still serving
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
