"""Run llmcompressor's GPTQ or AWQ on a model with given calibration token ids and save a compressed-tensors dir.

This file runs in the *peers'* interpreter (``--peers-python``), not fmgauge's: llmcompressor pins older
transformers / torch / compressed-tensors than fmgauge uses, so it lives in its own virtual environment
(``scripts/peers-venv.sh``). It therefore imports nothing from fmgauge and reads one JSON job file::

    python llmcompressor_job.py JOB.json

JOB.json keys: ``model_dir`` (a transformers checkpoint: the full-precision model fmgauge saved), ``calib``
(an ``.npy`` of calibration token ids, shape (n_samples, seqlen), int64: the very tokens fmgauge calibrates on),
``out_dir``, ``method`` (``gptq`` | ``awq``), ``bits``, ``group_size`` (−1 = per channel), ``sym``, and the GPTQ /
AWQ settings ``percdamp``, ``blocksize``, ``actorder`` (bool), ``n_grid``, ``duo_scaling``, plus ``threads``.

It writes ``out_dir`` (``model.save_pretrained(out_dir, save_compressed=True)``: pack-quantized compressed-tensors)
and ``out_dir/peer_run.json``: wall seconds and CPU seconds of ``oneshot`` (calibration and quantization), the
process's peak resident memory (MB), and the library versions.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def scheme(job: dict):  # noqa: ANN201
    """The compressed-tensors quantization scheme of ``job``'s grid (weights only, integer, min-max observer)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    per_channel = job["group_size"] == -1
    weights = QuantizationArgs(num_bits=job["bits"], type="int", symmetric=job["sym"],
                               strategy="channel" if per_channel else "group",
                               group_size=None if per_channel else job["group_size"])
    return QuantizationScheme(targets=["Linear"], weights=weights)


def recipe(job: dict) -> list:
    """llmcompressor modifiers for ``job``: GPTQ with fmgauge's damping / block size / act-order, or AWQ
    (scale search with llmcompressor's default Llama mappings) followed by min-max quantization."""
    groups = {"group_0": scheme(job)}
    if job["method"] == "gptq":
        from llmcompressor.modifiers.gptq import GPTQModifier

        return [GPTQModifier(config_groups=groups, ignore=["lm_head"], block_size=job["blocksize"],
                             dampening_frac=job["percdamp"], actorder="static" if job["actorder"] else None)]
    if job["method"] == "awq":
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(duo_scaling=job["duo_scaling"], n_grid=job["n_grid"]),
                QuantizationModifier(config_groups=groups, ignore=["lm_head"])]
    raise SystemExit(f"unknown method {job['method']!r} (gptq | awq)")


def cpu_only_pinning() -> None:
    """llmcompressor 0.14's AWQ pins its cached activations for faster host-to-GPU copies even on a CPU-only
    machine, where CUDA builds of torch then fail ("Found no NVIDIA driver"). Pinning changes no value, only copy
    speed, so without a GPU it is skipped."""
    import torch

    if torch.cuda.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    IntermediatesCache.pin_memory = lambda self, *a, **k: None  # noqa: ARG005


def main(path: str) -> None:
    job = json.loads(Path(path).read_text())
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(job.get("threads") or torch.get_num_threads()))
    ids = np.load(job["calib"])
    n, seqlen = ids.shape
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(job["model_dir"], local_files_only=True)

    from llmcompressor import oneshot

    cpu_only_pinning()
    t0, c0 = time.perf_counter(), time.process_time()
    oneshot(model=model, dataset=data, recipe=recipe(job), max_seq_length=seqlen, num_calibration_samples=n,
            shuffle_calibration_samples=False, tokenizer=tok)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(job["out_dir"])
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)

    import compressed_tensors
    import llmcompressor
    import transformers

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    (out / "peer_run.json").write_text(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "threads": torch.get_num_threads(),
        "calib_tokens": int(n * seqlen),
        "versions": {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__}}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: llmcompressor_job.py JOB.json")
    main(sys.argv[1])
