"""Contamination audit for language models, vision-language models and image benchmarks: did the model already
see this benchmark?

Library entry points (each behind a ``fmgauge contamination`` command):

- :func:`score` — per-item loss, zlib, Min-K%, Min-K%++ (k sweep) and reference ratio (cached token log-probs);
- :func:`exchangeability_test` — Oren et al.'s sharded canonical-order permutation test;
- :func:`topk_overlap` — cross-model top-K overlap with the hypergeometric null;
- :func:`run_audit` — every detector with a known-non-member cohort, a baseline model, multiple-testing correction
  and a verdict per detector × model (``signal`` / ``no signal`` / ``signal not specific``);
- :func:`plant` / :func:`plant_power` — positive controls: fine-tune on a benchmark split at duplication counts
  and measure each detector's power;
- :func:`vlm_token_stats` — the same token statistics from a vision-language model (Qwen2.5-VL, BLIP-2) over the
  answer tokens given image + question (:func:`resolve_images` finds each item's image), so every detector above
  also runs on VLMs; ``score``, ``topk_overlap`` and ``run_audit`` take VLM names directly;
- :func:`run_image_overlap` — image-side near-neighbour overlap with a reference corpus, τ from a control set,
  Wilson CI and an adjudication gallery (:mod:`~fmgauge.contamination.gallery`).

Imports are lazy: ``import fmgauge.contamination`` does not import torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "score": "fmgauge.contamination.detect",
    "topk_overlap": "fmgauge.contamination.detect",
    "exchangeability_test": "fmgauge.contamination.exchangeability",
    "ExchangeabilityConfig": "fmgauge.contamination.exchangeability",
    "run_audit": "fmgauge.contamination.audit",
    "AuditConfig": "fmgauge.contamination.audit",
    "plant": "fmgauge.contamination.plant",
    "plant_power": "fmgauge.contamination.plant",
    "PlantConfig": "fmgauge.contamination.plant",
    "load_benchmark": "fmgauge.contamination.benchmarks",
    "run_image_overlap": "fmgauge.contamination.image_overlap",
    "ImageOverlapConfig": "fmgauge.contamination.image_overlap",
    "vlm_token_stats": "fmgauge.contamination.vlm_scoring",
    "resolve_images": "fmgauge.contamination.vlm_scoring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fmgauge.contamination' has no attribute {name!r}")
