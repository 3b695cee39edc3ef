"""Load a saved quantized model the way its users would, so ``quantize eval`` measures the file that ships.

==================  ==========================================================================================
compressed-tensors  ``AutoModelForCausalLM.from_pretrained(dir)`` (transformers' compressed-tensors quantizer);
                    asymmetric checkpoints, which transformers 5.23 + compressed-tensors 0.20.1 refuse on load,
                    through compressed-tensors' own decompression (:func:`.compressed.load_decompressed`)
gptq                ``from_pretrained(dir)`` when a GPTQ kernel library (gptqmodel + optimum) is installed; otherwise
                    fmgauge's independent unpacker into a float model (the row's ``loader`` says which)
gguf                transformers' GGUF reader (``from_pretrained(dir, gguf_file=…)``, which dequantizes the blocks
                    with gguf-py, llama.cpp's own Python package); llama-cpp-python is not evaluated here
fmgauge             ``from_pretrained(dir)`` (fp32 dequantized weights)
==================  ==========================================================================================
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)


def artifact_format(path: str | Path) -> str | None:
    """The format of a saved directory (None: not a quantized artefact, e.g. a plain model or a model name)."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "model.gguf").exists() or any(p.glob("*.gguf")):
        return "gguf"
    if (p / "quantized.safetensors").exists():
        return "fmgauge"
    cfg = p / "config.json"
    if cfg.exists():
        qc = json.loads(cfg.read_text()).get("quantization_config") or {}
        method = qc.get("quant_method")
        if method in ("compressed-tensors", "gptq"):
            return method
    return None


def load_artifact(path: str | Path, *, device: str = "auto", dtype: str = "float32"):  # noqa: ANN201
    """``(TextModel, loader)`` for a saved directory; ``loader`` names the library path that read the weights."""
    import transformers

    from fmgauge.core.models import resolve_device, resolve_dtype
    from fmgauge.core.text_models import TextModel, load_text_model

    p = Path(path)
    fmt = artifact_format(p)
    if fmt in (None, "fmgauge"):
        return load_text_model(str(p), device=device, dtype=dtype), "transformers"
    dev = resolve_device(device)
    tdtype = resolve_dtype(dtype, dev)
    tok = transformers.AutoTokenizer.from_pretrained(p, local_files_only=True)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if fmt == "compressed-tensors":
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(p, dtype=tdtype, local_files_only=True)
            loader = "transformers + compressed-tensors (from_pretrained)"
        except RuntimeError as e:
            if "weight_zero_point" not in str(e) and "mismatch" not in str(e):
                raise FmgaugeError(f"could not load {p} with transformers + compressed-tensors: {e}") from e
            from fmgauge.quantization.formats.compressed import load_decompressed

            model = load_decompressed(p, tdtype)
            loader = ("compressed-tensors decompression (transformers' loader refuses asymmetric pack-quantized "
                      "zero points in this version)")
    elif fmt == "gptq":
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(p, dtype=tdtype, local_files_only=True)
            loader = "transformers GPTQ integration (from_pretrained)"
        except (ImportError, ValueError, RuntimeError) as e:
            from fmgauge.quantization.formats.gptq import load_gptq_float

            log.warning("transformers could not load the GPTQ checkpoint (%s); unpacking it with fmgauge's reader",
                        str(e).splitlines()[0][:200])
            model = load_gptq_float(p, dtype=tdtype)
            loader = "fmgauge GPTQ unpacker (transformers' GPTQ path needs gptqmodel + optimum, not installed)"
    else:
        gguf = sorted(p.glob("*.gguf"))[0]
        model = transformers.AutoModelForCausalLM.from_pretrained(p, gguf_file=gguf.name, dtype=tdtype,
                                                                  local_files_only=True)
        model.hf_quantizer = None
        loader = "transformers GGUF reader (gguf-py dequantization)"
    model.to(dev).eval()
    return TextModel(model, tok, str(p), str(p), dev), loader
