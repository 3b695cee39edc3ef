"""Answer-token statistics of a vision-language model: ``log p(answer | image, question)`` token by token.

What is scored. For VQA item ``i`` with image ``I``, question ``q`` and answer ``a`` tokenised as ``a_1 … a_A``,
the VLM reads the prompt built from (``I``, ``q``) and the answer after it; the targets are the ``A`` answer tokens
only (never the prompt, the image placeholders or an end-of-turn token). For each target, from the FULL
next-token distribution ``p`` over the vocabulary at the position that predicts it, we keep exactly what
:mod:`fmgauge.contamination.scoring` keeps for a text LM (``logp = log p(a_t)``, ``mu = Σ_v p_v log p_v``, ``sigma
= sqrt(Σ_v p_v (log p_v)² − mu²)``) in a :class:`~fmgauge.contamination.scoring.TokenStats`, so loss, zlib (on the
answer text), Min-K%, Min-K%++, cohort tail enrichment and top-K run unchanged on VLMs.

Prompts, per family (:mod:`fmgauge.core.vlm_models`):

- ``qwen-vl`` (Qwen2.5-VL, Qwen2-VL): the processor's chat template with one user turn ``[image, question]`` and
  the generation prompt (``<|im_start|>user\\n<|vision_start|><|image_pad|>…<|vision_end|>{q}<|im_end|>\\n
  <|im_start|>assistant\\n`` for the Instruct models, after their default system turn), then the answer tokens.
  The processor expands ``<|image_pad|>`` to one token per 2×2 merged 14-px patch at its own resolution settings;
  ``mm_token_type_ids`` marks them so the model builds its 3-D rotary positions.
- ``blip2`` with OPT: ``num_query_tokens`` ``<image>`` tokens, then the tokenizer's BOS and ``Question: {q}
  Answer:`` (the VQA prompt of the BLIP-2 paper and model card), then `` {a}`` (leading space, as generated).
- ``blip2`` with T5 (encoder-decoder): the same prompt is the encoder input; the decoder reads
  ``decoder_start_token_id, a_1 … a_{A−1}`` and its logits at step ``t`` predict ``a_t``.

Prompt and answer are tokenised separately and concatenated (the answer's tokens do not depend on the prompt).

Batching, caching: items are sorted by sequence length (image tokens included) and batched under a token budget,
right-padded with an attention mask; padding never changes a score (tested: batched == one at a time); only the
positions that predict answer tokens go through the LM head (``logits_to_keep``). Images are
decoded and preprocessed per batch (a Qwen image at default resolution is megabytes of patches). Results are
cached under (model identity + weight-file fingerprints, processor, prompt format, questions, answers, image
content hashes).

Images: :func:`resolve_images` maps each item's image name to a file under ``--image-root`` and refuses, before
any model load, a benchmark without images, a missing root or missing files, unless the caller asks for a blank
image (``blank_missing=True``: a black 224×224 RGB image stands in, the count is reported, and those items' scores
measure the text prior of the answer given the question only).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmgauge.contamination.benchmarks import TextBenchmark
from fmgauge.contamination.scoring import (
    TokenStats,
    _distribution_stats,
    _progress,
    check_tokenizer_matches,
    model_identity,
)
from fmgauge.core.cache import cached_arrays, stable_hash
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

BLIP2_PROMPT = "Question: {question} Answer:"
BLANK_SIZE = 224  # side of the blank stand-in image, px
PROMPT_VERSION = 1  # bump when a prompt format changes (part of the cache key)


@dataclass(frozen=True)
class VQAItems:
    """``N`` items a VLM scores: ``questions`` (N,), ``answers`` (N,), ``images`` (N,) absolute paths (None = the
    blank stand-in) and ``n_blank`` = how many are blank."""

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    images: tuple[Path | None, ...]

    @property
    def n_blank(self) -> int:
        return sum(p is None for p in self.images)

    def __len__(self) -> int:
        return len(self.answers)


def resolve_images(bench: TextBenchmark, image_root: str | Path | None = None, *,
                   blank_missing: bool = False) -> VQAItems:
    """The (question, answer, image file) of every item of ``bench``, checked before any model loads.

    Relative image names are read from ``image_root``, else the benchmark's own image folder (a table's folder).
    Refused: a benchmark without question/answer fields or without image names, relative names with no root, a
    root that is not a directory, and missing image files, unless ``blank_missing`` (then a blank image stands in
    for each missing one, logged with the count).
    """
    vqa = bench.vqa
    if vqa is None:
        raise FmgaugeError(f"benchmark {bench.name!r} ({bench.template!r}) has no question/answer fields; a "
                           "vision-language model scores the answer given image + question: use a VQA benchmark "
                           "(slake-en, vqa-rad, ...) or a table with question, answer and image columns.")
    if image_root is not None and not Path(image_root).expanduser().is_dir():
        raise FmgaugeError(f"--image-root {image_root} is not a directory; point it at the folder holding the "
                           f"benchmark's images (e.g. SLAKE's imgs/ with xmlab102/source.jpg inside).")
    named = [n for n in vqa.images if n is not None]
    if not named and not blank_missing:
        raise FmgaugeError(f"benchmark {bench.name!r} names no image for its items, so a vision-language model has "
                           "nothing to look at: give a benchmark with images (a table needs an image column), or "
                           "pass --blank-images to score every answer with a blank image (text prior only).")
    root = Path(image_root).expanduser() if image_root is not None else (
        Path(vqa.image_dir) if vqa.image_dir is not None else None)
    if root is None and any(not Path(n).is_absolute() for n in named) and not blank_missing:
        example = next(n for n in named if not Path(n).is_absolute())
        raise FmgaugeError(f"--image-root: benchmark {bench.name!r} names its images relative to a folder (e.g. "
                           f"{example!r}) and its files hold no images; pass --image-root DIR with the images "
                           f"(for SLAKE: the imgs/ folder of the SLAKE 1.0 download).")
    paths: list[Path | None] = []
    missing: list[str] = []
    for n in vqa.images:
        p = None if n is None else (Path(n) if Path(n).is_absolute() else None if root is None else root / n)
        if p is None or not p.is_file():
            missing.append(str(p) if p is not None else "(no image named)")
            p = None
        paths.append(p)
    if missing and not blank_missing:
        raise FmgaugeError(f"--image-root {root}: {len(missing)} of {len(paths)} images of {bench.name!r} are missing "
                           f"(first: {missing[0]}); point --image-root at the folder holding them, or pass "
                           "--blank-images to score those items with a blank image (text prior only).")
    if missing:
        log.warning("%d of %d items of %s are scored with a blank %dx%d image (no image file): their scores "
                    "measure the answer's text prior given the question only", len(missing), len(paths),
                    bench.name, BLANK_SIZE, BLANK_SIZE)
    return VQAItems(vqa.questions, vqa.answers, tuple(paths))


def image_hash(path: Path | None) -> str:
    """Content hash of an image file (``"blank"`` for the stand-in)."""
    if path is None:
        return "blank"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_image(path: Path | None) -> Any:
    """The image at ``path`` as RGB PIL, or the black 224×224 stand-in; unreadable files are refused by name."""
    from PIL import Image, UnidentifiedImageError

    if path is None:
        return Image.new("RGB", (BLANK_SIZE, BLANK_SIZE))
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise FmgaugeError(f"image {path} could not be read as an image: {e}") from None


# ------------------------------------------------------------------------------------------------ adapters

@dataclass
class _Encoded:
    """One item: ``ids`` the causal sequence (decoder-only) or the encoder input (T5); ``answer`` (A,) targets;
    ``vision``: image tensors for the forward."""

    ids: list[int]
    answer: list[int]
    vision: dict[str, torch.Tensor]


def _encode(vm: Any, question: str, answer: str, image: Any) -> _Encoded:
    proc, tok = vm.processor, vm.tokenizer
    if vm.family == "qwen-vl":
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        enc = proc(text=[prompt], images=[image], return_tensors="pt")
        vision = {"pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}
        ans = tok(answer, add_special_tokens=False)["input_ids"]
    else:
        enc = proc(images=[image], text=[BLIP2_PROMPT.format(question=question)], return_tensors="pt")
        vision = {"pixel_values": enc["pixel_values"]}
        ans = tok(answer if vm.encoder_decoder else " " + answer, add_special_tokens=False)["input_ids"]
    return _Encoded([int(t) for t in enc["input_ids"][0]], [int(t) for t in ans], vision)


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``rows`` to (B, L) ids and a (B, L) attention mask."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def forward_answer_stats(vm: Any, batch: Sequence[_Encoded], *, pad_id: int) -> list[tuple[np.ndarray, ...]]:
    """One forward over ``batch`` (B items); per item (logp, mu, sigma) of its answer tokens, each (A_b,)."""
    model, dev = vm.model, vm.device
    dtype = next(model.parameters()).dtype
    pixels = torch.cat([e.vision["pixel_values"] for e in batch]).to(dev, dtype)
    if vm.encoder_decoder:
        start = int(model.config.text_config.decoder_start_token_id)
        ids, mask = _pad([e.ids for e in batch], pad_id)
        dec, dmask = _pad([[start] + e.answer[:-1] for e in batch], pad_id)
        logits = model(pixel_values=pixels, input_ids=ids.to(dev), attention_mask=mask.to(dev),
                       decoder_input_ids=dec.to(dev), decoder_attention_mask=dmask.to(dev)).logits  # (B, A_max, V)
        spans = [(0, len(e.answer)) for e in batch]
    else:
        ids, mask = _pad([e.ids + e.answer for e in batch], pad_id)
        kwargs: dict[str, Any] = {"pixel_values": pixels, "input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
        if vm.family == "qwen-vl":
            kwargs["image_grid_thw"] = torch.cat([e.vision["image_grid_thw"] for e in batch]).to(dev)
            kwargs["mm_token_type_ids"] = (ids == model.config.image_token_id).long().to(dev)  # 1 = image token
        spans = [(len(e.ids) - 1, len(e.ids) - 1 + len(e.answer)) for e in batch]  # positions predicting answers
        lo, hi = min(a for a, _ in spans), max(z for _, z in spans)
        try:  # form the logits of positions lo..hi-1 only (the LM head over a 150k vocabulary dominates otherwise)
            logits = model(**kwargs, logits_to_keep=torch.arange(lo, hi, device=dev)).logits  # (B, hi − lo, V)
        except TypeError:  # a model without logits_to_keep: form all logits, keep the span
            logits = model(**kwargs).logits[:, lo:hi]
        spans = [(a - lo, z - lo) for a, z in spans]
    out = []
    for b, (e, (a, z)) in enumerate(zip(batch, spans, strict=True)):
        tgt = torch.tensor(e.answer, dtype=torch.long, device=logits.device)
        lp, mu, sd = _distribution_stats(logits[b, a:z].float(), tgt)
        out.append((lp.cpu().numpy(), mu.cpu().numpy(), sd.cpu().numpy()))
    return out


def _batches(lengths: Sequence[int], max_batch_tokens: int, batch_size: int | None) -> list[list[int]]:
    """Indices sorted by length (longest first), grouped so rows × longest ≤ ``max_batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda j: -lengths[j])
    batches, cur = [], []
    for j in order:
        if cur and ((len(cur) + 1) * lengths[cur[0]] > max_batch_tokens or (batch_size and len(cur) + 1 > batch_size)):
            batches.append(cur)
            cur = []
        cur.append(j)
    if cur:
        batches.append(cur)
    return batches


def vlm_token_stats(vm: Any, items: VQAItems, *, max_batch_tokens: int = 4096, batch_size: int | None = None,
                    cache: bool = True, progress: bool = False) -> TokenStats:
    """Answer-token ``logp``, ``mu``, ``sigma`` of every item under ``vm`` (a
    :class:`~fmgauge.core.vlm_models.VisionLanguageModel`); item ``i`` owns its ``A_i`` answer tokens.

    ``max_batch_tokens``: padded sequence tokens per forward (image tokens included); ``batch_size`` caps rows.
    """
    if len(items) == 0:
        raise FmgaugeError("no items to score (empty benchmark).")
    desc = {"model": model_identity(vm), "processor": getattr(vm.tokenizer, "name_or_path", "?"),
            "family": vm.family, "encoder_decoder": vm.encoder_decoder, "prompt": PROMPT_VERSION,
            "questions": stable_hash(list(items.questions)), "answers": stable_hash(list(items.answers)),
            "images": stable_hash([image_hash(p) for p in items.images]), "n": len(items), "v": 1}

    def compute() -> dict[str, np.ndarray]:
        return _compute(vm, items, max_batch_tokens, batch_size, progress).to_arrays()

    arrays = cached_arrays("contamination-vlm-tokens", desc, compute) if cache else compute()
    return TokenStats(**arrays)


def _compute(vm: Any, items: VQAItems, max_batch_tokens: int, batch_size: int | None,
             progress: bool) -> TokenStats:
    def encode(i: int) -> _Encoded:
        e = _encode(vm, items.questions[i], items.answers[i], load_image(items.images[i]))
        if not e.answer:
            raise FmgaugeError(f"item {i}: the answer {items.answers[i]!r} tokenises to no token; remove it.")
        return e

    # length pass: every image is decoded and every prompt built before the first forward (bad files fail here)
    heads = []
    for i in range(len(items)):
        e = encode(i)
        heads.append((e.ids, e.answer))
    check_tokenizer_matches(vm.model, vm.tokenizer, [a + b for a, b in heads])
    lengths = [len(a) + (0 if vm.encoder_decoder else len(b)) for a, b in heads]
    tok = vm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    parts: dict[int, tuple[np.ndarray, ...]] = {}
    with _progress(progress, "scoring answer tokens", len(items)) as advance:
        for bj in _batches(lengths, max_batch_tokens, batch_size):
            res = forward_answer_stats(vm, [encode(j) for j in bj], pad_id=pad)
            for j, r in zip(bj, res, strict=True):
                parts[j] = r
            advance(len(bj))
    offsets = np.concatenate([[0], np.cumsum([len(b) for _, b in heads])]).astype(np.int64)
    return TokenStats(np.concatenate([np.asarray(b, dtype=np.int64) for _, b in heads]),
                      *(np.concatenate([parts[i][k] for i in range(len(items))]) for k in range(3)), offsets)
