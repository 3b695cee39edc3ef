"""Evaluation of a (quantized) causal LM: perplexity, KL divergence to the full-precision model, size.

Perplexity protocol (the same for every method, stated in every output): the text stream of
:mod:`.text_data` (WikiText-2 *test*, tokenized once), windows of ``context`` tokens every ``stride`` tokens
(Hugging Face's sliding-window recipe; ``stride == context`` = the non-overlapping protocol of the GPTQ/AWQ papers),
each token scored once; ``max_windows`` keeps the first N windows (a fixed, stated subset). PPL = exp(mean NLL) with
a 95% interval from the t-interval of per-window mean NLLs.

KL: mean over tokens of ``KL(P_fp ‖ P_q)`` (nats) on the first ``kl_windows`` non-overlapping windows of the same
held-out text, with the top-1 agreement of the two models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fmgauge.core.stats import mean_ci
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.text_data import TextSource, eval_windows, token_stream


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field("wikitext2", description="'wikitext2' or a path to a UTF-8 text file.")
    split: str = Field("test", description="WikiText-2 split for evaluation.")
    context: int = Field(512, description="Tokens per perplexity window.")
    stride: int | None = Field(None, description="Window step (None = context: non-overlapping windows).")
    max_windows: int | None = Field(None, description="Score only the first N windows (None: all).")
    kl_windows: int = Field(8, description="Windows of held-out text for the KL to the FP model (0: skip).")

    @property
    def step(self) -> int:
        return self.context if self.stride is None else self.stride

    def protocol(self, n_windows: int, total: int) -> str:
        src = f"WikiText-2 {self.split} (tokenized v1)" if self.text == "wikitext2" else self.text
        sub = f"first {n_windows} of {total} windows" if n_windows < total else f"all {total} windows"
        return f"{src}, context {self.context}, stride {self.step}, {sub}"


@dataclass
class PerplexityResult:
    ppl: float
    ppl_lo: float
    ppl_hi: float
    nll: float  # mean NLL, nats/token
    n_tokens: int
    n_windows: int
    total_windows: int
    protocol: str
    window_nll: list[float] = field(default_factory=list, repr=False)  # mean NLL per window (the paired unit)

    def to_dict(self) -> dict:
        """The scalar fields (a table row); ``window_nll`` is kept apart."""
        return {k: v for k, v in vars(self).items() if k != "window_nll"}


@torch.no_grad()
def perplexity(model, stream: torch.Tensor, cfg: EvalConfig, *, progress: bool = True) -> PerplexityResult:  # noqa: ANN001
    """Perplexity of ``model`` on ``stream`` (1-D token ids) under the protocol of ``cfg``."""
    from fmgauge.core.progress import progress as progress_tracker

    windows = eval_windows(stream, cfg.context, cfg.step)
    total = len(windows)
    if cfg.max_windows is not None:
        windows = windows[:cfg.max_windows]
    dev = next(model.parameters()).device
    nll_sum, n_tok, per_window = 0.0, 0, []
    with progress_tracker("perplexity", len(windows), enabled=progress) as bar:
        for begin, end, n_target in windows:
            ids = stream[begin:end].unsqueeze(0).to(dev)
            logits = model(ids, use_cache=False).logits[0, :-1].float()  # (T-1, V) predicts ids[1:]
            logp = torch.log_softmax(logits[-n_target:], -1)
            tgt = ids[0, 1:][-n_target:]
            nll = -logp.gather(1, tgt.unsqueeze(1)).squeeze(1)
            nll_sum += float(nll.sum())
            n_tok += n_target
            per_window.append(float(nll.mean()))
            bar.advance(1)
    m = nll_sum / n_tok
    ci = mean_ci(np.array(per_window))
    lo, hi = (ci.lo, ci.hi) if len(per_window) > 1 else (m, m)
    return PerplexityResult(math.exp(m), math.exp(lo), math.exp(hi), m, n_tok, len(windows), total,
                            cfg.protocol(len(windows), total), per_window)


def perplexity_from_windows(window_nll: list[float], n_targets: list[int], total: int, cfg: EvalConfig
                            ) -> PerplexityResult:
    """The :class:`PerplexityResult` of per-window mean NLLs scored elsewhere (e.g. by llama.cpp): PPL =
    exp(Σ_w n_w · nll_w / Σ_w n_w), the interval from the windows' t-interval, as :func:`perplexity` computes it."""
    w = np.asarray(window_nll, dtype=float)
    n = np.asarray(n_targets, dtype=float)
    m = float((w * n).sum() / n.sum())
    ci = mean_ci(w)
    lo, hi = (ci.lo, ci.hi) if len(w) > 1 else (m, m)
    return PerplexityResult(math.exp(m), math.exp(lo), math.exp(hi), m, int(n.sum()), len(w), total,
                            cfg.protocol(len(w), total), [float(x) for x in w])


ENGINES = ("transformers", "llama.cpp")


def gguf_file(model: str) -> Path:
    """The GGUF file of ``model`` (a ``.gguf`` path or a directory holding one), or FmgaugeError."""
    p = Path(model)
    if p.is_file() and p.suffix == ".gguf":
        return p
    found = sorted(p.glob("*.gguf")) if p.is_dir() else []
    if not found:
        raise FmgaugeError(f"--engine llama.cpp scores a GGUF file; {model} is neither a .gguf file nor a directory "
                           "holding one (write one with `quantize run --format gguf`).")
    return found[0]


def evaluate_llamacpp(model: str, cfg: EvalConfig, *, llama_root: str | None = None, progress: bool = True) -> dict:
    """Perplexity of a GGUF through llama.cpp on fmgauge's token ids and windows (the tokenizer saved beside the
    file, else the one inside it). No KL: llama.cpp's logits are not compared with a reference here."""
    import transformers

    from fmgauge.quantization import llamacpp
    from fmgauge.quantization.formats.gguf import file_sizes

    llama = llamacpp.find_llama(llama_root)
    path = gguf_file(model)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path.parent, local_files_only=True)
    except (OSError, ValueError):
        tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    stream = token_stream(tok, TextSource(cfg.text, cfg.split))
    windows = eval_windows(stream, cfg.context, cfg.step)
    total = len(windows)
    windows = windows[: cfg.max_windows] if cfg.max_windows is not None else windows
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fmgauge-llama-") as tmp:
        res = llamacpp.score(llama, path, stream, windows, Path(tmp), n_ctx=cfg.context,
                             threads=torch.get_num_threads())
    ppl = perplexity_from_windows(res["window_nll"], [w[2] for w in windows], total, cfg)
    sizes = file_sizes(path)
    return {"model": model, "engine": "llama.cpp", "loader": f"llama.cpp ({llama.describe()})",
            "format": "gguf", **ppl.to_dict(), "on_disk_mb": sizes["file_bytes"] / 1e6, "file_bpw": sizes["bpw"],
            "gguf_types": sizes["types"], "eval_seconds": res["process"]["seconds"],
            "eval_cpu_seconds": res["process"]["cpu_seconds"], "window_nll": res["window_nll"]}


@torch.no_grad()
def kl_to_reference(model, reference, stream: torch.Tensor, cfg: EvalConfig, *,  # noqa: ANN001
                    progress: bool = True) -> dict:
    """Mean token ``KL(P_ref ‖ P_model)`` (nats) with a 95% CI over windows, and top-1 agreement."""
    from fmgauge.core.progress import progress as progress_tracker

    windows = eval_windows(stream, cfg.context, cfg.context)[:cfg.kl_windows]
    dev = next(model.parameters()).device
    kls, agree, n = [], 0, 0
    with progress_tracker("KL to the full-precision model", len(windows), enabled=progress) as bar:
        for begin, end, _ in windows:
            ids = stream[begin:end].unsqueeze(0).to(dev)
            lq = torch.log_softmax(model(ids, use_cache=False).logits[0].float(), -1)
            lp = torch.log_softmax(reference(ids.to(next(reference.parameters()).device),
                                             use_cache=False).logits[0].float().to(dev), -1)
            kl = (lp.exp() * (lp - lq)).sum(-1)
            kls.append(float(kl.mean()))
            agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
            n += kl.numel()
            bar.advance(1)
    ci = mean_ci(np.array(kls))
    return {"kl": ci.value, "kl_lo": max(0.0, ci.lo), "kl_hi": ci.hi, "top1_agreement": agree / max(n, 1),
            "kl_tokens": n, "kl_windows": len(windows)}


def evaluate(model, tokenizer, cfg: EvalConfig, *, reference=None, progress: bool = True) -> dict:  # noqa: ANN001
    """Perplexity (+ KL to ``reference`` when given) as one flat dict (the row of a comparison table)."""
    stream = token_stream(tokenizer, TextSource(cfg.text, cfg.split))
    res = perplexity(model, stream, cfg, progress=progress).to_dict()
    if reference is not None and cfg.kl_windows > 0:
        res.update(kl_to_reference(model, reference, stream, cfg, progress=progress))
    return res


def evaluate_model(model: str, cfg: EvalConfig, *, reference: str | None = None, device: str = "auto",
                   dtype: str = "float32", progress: bool = True, engine: str = "transformers",
                   llama_root: str | None = None) -> dict:
    """Evaluate ``model`` (a saved quantized directory, or any model name) and, with ``reference``, its KL to it.

    For a directory written by ``fmgauge quantize run`` the reference defaults to the model it was made from, and
    the row carries its size, time and memory from ``quantization.json``. ``engine='llama.cpp'`` scores its GGUF
    file through llama.cpp instead (:func:`evaluate_llamacpp`; no KL).
    """
    from fmgauge.core.text_models import load_text_model
    from fmgauge.quantization.formats import weight_files
    from fmgauge.quantization.formats.load import artifact_format, load_artifact

    if engine not in ENGINES:
        raise FmgaugeError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if engine == "llama.cpp":
        gguf_file(model)  # refusals before any work
        row = evaluate_llamacpp(model, cfg, llama_root=llama_root, progress=progress)
        row.pop("window_nll")
        return row
    record = None
    if (Path(model) / "quantization.json").exists():
        from fmgauge.quantization.pipeline import read_record

        record = read_record(model)
        reference = reference or record["model"]["model"]
    tm, loader = load_artifact(model, device=device, dtype=dtype)
    ref = load_text_model(reference, device=device, dtype=dtype).model if reference else None
    row = {"model": model, "reference": reference, "format": artifact_format(model) or "unquantized",
           "loader": loader, **evaluate(tm.model, tm.tokenizer, cfg, reference=ref, progress=progress)}
    if Path(model).is_dir():
        row["on_disk_mb"] = sum(weight_files(Path(model)).values()) / 1e6
    if record is not None:
        cfgq = record["config"]
        row.update(method=cfgq["method"], bits=cfgq["bits"], group_size=cfgq["group_size"],
                   size_mb=record["size"]["size_mb"], avg_bits=record["size"]["bits_per_quantized_weight"],
                   quant_seconds=record["quantization_usage"]["seconds"],
                   quant_peak_rss_mb=record["quantization_usage"]["peak_rss_mb"],
                   calib_seconds=(record["calibration"].get("usage") or {}).get("seconds"))
    return row
