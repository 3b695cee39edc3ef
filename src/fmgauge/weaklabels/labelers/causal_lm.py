"""Zero-shot text labeler by causal-LM prompting: score each class's verbaliser after an instruction prompt.

Notation: N texts, M scored classes (the dataset's K, or more with one-vs-rest ``rest_classes``, see :mod:`.text`),
prompt x_i = template(text_i, options), verbaliser v_m = (v_m1..v_mT_m) tokens of ``answer_prefix + name_m``:

    s_im = sum_t log P(v_mt | x_i, v_m<t)          (score "sum"; "mean" divides by T_m)      (N, M)
    p(m | text_i) = softmax_m(s_im)                 then summed within each dataset class     (N, K)

(the "rank classification" of zero-shot prompting, e.g. Brown et al. 2020, GPT-3 §2; Schick & Schütze 2021 call
v_m the verbaliser). Computation, per batch of B texts sorted by length:

1. one forward of the base model over the left-padded prompts (attention mask, position ids from the mask),
   keeping the KV cache; the last position's hidden state gives log P(v_m1 | x_i) for every m;
2. the cache is repeated M times (``batch_repeat_interleave``) and the M continuations v_m1..v_m(T_m-1)
   (right-padded) run as one (B·M)-row forward on top of it; skipped when every verbaliser is one token;
3. the LM head is applied only to the hidden states that predict a verbaliser token (never the full vocabulary at
   every prompt position; Gemma 3's vocabulary has 262k entries).

The prompt is ``template`` if the config gives one, else the dataset's (``meta["chat_prompt"]`` with
``chat_template``, else ``meta["prompt"]``; Medical Abstracts carries "Here is the abstract of a medical research
article. ..."), else the neutral :data:`DEFAULT_TEMPLATE` / :data:`DEFAULT_CHAT_TEMPLATE` ("Here is a text. ...").

Texts longer than ``max_text_tokens`` tokens are cut to their first ``max_text_tokens`` tokens (the template's
own tokens are never cut); the number of truncated texts is logged. On the first batch the labeler checks its
cached, padded scores against a plain full-sequence forward of one text and refuses to go on if they differ (a
model whose output layer does more than lm_head + optional final logit soft-capping).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from fmgauge.core.cache import cached_arrays
from fmgauge.core.data import Dataset
from fmgauge.core.models import DeviceName
from fmgauge.core.validation import FmgaugeError, check_template
from fmgauge.weaklabels.labelers.base import LABELERS, LabelerBase, LabelerKind, LabelerOutput
from fmgauge.weaklabels.labelers.text import first_set, pool_classes, scored_classes, split_texts
from fmgauge.weaklabels.text_embed import model_identity, texts_hash, torch_threads

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
# neutral prompts for any corpus (Medical Abstracts brings its own in its meta: "Here is the abstract of ...")
DEFAULT_TEMPLATE = ("Here is a text.\n\n{text}\n\n"
                    "Question: which one of these topics is the text about: {options}?\nAnswer:")
DEFAULT_CHAT_TEMPLATE = ("Here is a text.\n\n{text}\n\n"
                         "Which one of these topics is the text about: {options}? Answer with the topic only.")
_TEXT_SLOT = "\x00TEXT\x00"
CONTENT_FREE = ("N/A", "", "[MASK]")


class CausalLMLabeler(LabelerBase):
    kind: Literal["causal-lm"] = "causal-lm"
    model: str = Field("smollm2-135m", description="causal LM: registered name (smollm2-135m, gemma3-270m), "
                       "local directory or hub id, loaded by core.text_models.load_text_model")
    template: str | None = Field(None, description="prompt with '{text}' and optionally '{options}' (the "
                                 "verbalisers joined by ', '); None = the dataset's prompt (meta 'chat_prompt' "
                                 "with chat_template, else 'prompt'), else the module's neutral default "
                                 "(DEFAULT_TEMPLATE or DEFAULT_CHAT_TEMPLATE)")
    chat_template: bool = Field(False, description="wrap the prompt as a user message in the tokenizer's chat "
                                "template with the assistant turn opened (instruction-tuned models)")
    verbalisers: list[str] | None = Field(None, description="answer text per dataset class in class order; "
                                          "None = the class names")
    rest_classes: list[str] | None = Field(
        None, description="one-vs-rest datasets ('not X', 'X'): the classes that make up 'not X', each scored "
        "as an option (may include X to fix its place among the options); P(not X) = sum of their "
        "probabilities. None: dataset.meta['rest_class_names'] if present, else 'not X' is an option as named")
    answer_prefix: str | None = Field(None, description="text before each verbaliser; None = ' ' (plain "
                                      "prompt ending in 'Answer:') or '' (chat template)")
    score: Literal["sum", "mean"] = Field("sum", description="sum (log-probability of the whole verbaliser) "
                                          "or mean (per token) of the verbaliser tokens' log-probabilities")
    calibrate: Literal["none", "content-free"] = Field(
        "none", description="content-free: divide each class's probability by its probability for content-free "
        "texts ('N/A', '', '[MASK]'; Zhao et al. 2021), removing the model's prior for some answers")
    max_text_tokens: int = Field(256, ge=1, description="texts are cut to their first max_text_tokens tokens")
    batch_size: int = Field(8, ge=1, description="texts per forward pass")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|cuda:N|mps")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field("float32", description="model dtype")

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str | None) -> str | None:
        return v if v is None else check_template("template", v, required=["text"], optional=["options"], once=True)

    @field_validator("verbalisers")
    @classmethod
    def _check_verbalisers(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (any(not isinstance(s, str) or not s.strip() for s in v) or len(set(v)) != len(v)):
            raise FmgaugeError(f"verbalisers must be distinct non-empty strings, got {v!r}.")
        return v


    def describe(self) -> str:
        return f"causal-lm:{self.model}"

    def prompt_template(self, ds: Dataset | None = None) -> str:
        """The prompt: ``template`` > the dataset's (meta ``chat_prompt`` with ``chat_template``, else
        ``prompt``) > the neutral default (plain or chat)."""
        meta = ds.meta if ds is not None else {}
        return first_set(self.template, meta.get("chat_prompt") if self.chat_template else None, meta.get("prompt"),
                         DEFAULT_CHAT_TEMPLATE if self.chat_template else DEFAULT_TEMPLATE)

    def prefix(self) -> str:
        return self.answer_prefix if self.answer_prefix is not None else ("" if self.chat_template else " ")


# ----------------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class Prompts:
    """Token ids of N prompts and M verbalisers, and how many texts were truncated."""

    prompts: list[list[int]]  # N lists: template prefix + text (<= max_text_tokens) + template suffix
    verbalisers: list[list[int]]  # M lists, each >= 1 token
    n_truncated: int


def _special_prefix(tokenizer) -> list[int]:
    """Tokens the tokenizer puts before any text (e.g. Gemma's <bos>); never trailing ones like [SEP]."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for s in range(len(ids) - len(plain) + 1):
        if ids[s:s + len(plain)] == plain:
            return list(ids[:s])
    return []


def prompt_pieces(cfg: CausalLMLabeler, tokenizer, options: str, ds: Dataset | None = None) -> tuple[str, str]:
    """(text before {text}, text after it) of the rendered prompt (for ``ds``), chat template applied if asked."""
    rendered = cfg.prompt_template(ds).replace("{text}", _TEXT_SLOT).format(options=options)
    if cfg.chat_template:
        if getattr(tokenizer, "chat_template", None) is None:
            raise FmgaugeError(f"chat_template is set but model {cfg.model!r}'s tokenizer has no chat template; "
                               "set chat_template: false.")
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": rendered}], tokenize=False,
                                                 add_generation_prompt=True)
    before, after = rendered.split(_TEXT_SLOT)
    return before, after


def encode_prompts(tokenizer, texts: list[str], before: str, after: str, *, max_text_tokens: int,
                   answer_prefix: str, verbalisers: list[str], add_special: bool = True) -> Prompts:
    """Tokenise ``before + text + after`` per text with the text cut to ``max_text_tokens`` tokens.

    Whitespace that ends ``before`` is moved to the start of the text so BPE tokenisers see " word" as usual.
    ``add_special``: prepend the tokenizer's leading special tokens (off for chat templates, which carry them).
    """
    lead = before[len(before.rstrip()):]
    before = before[: len(before) - len(lead)]
    head = (_special_prefix(tokenizer) if add_special else []) + tokenizer(before, add_special_tokens=False)[
        "input_ids"]
    tail = tokenizer(after, add_special_tokens=False)["input_ids"]
    body = tokenizer([lead + t for t in texts], add_special_tokens=False)["input_ids"]
    n_trunc = sum(len(b) > max_text_tokens for b in body)
    prompts = [head + b[:max_text_tokens] + tail for b in body]
    verb = [tokenizer(answer_prefix + v, add_special_tokens=False)["input_ids"] for v in verbalisers]
    empty = [v for v, ids in zip(verbalisers, verb, strict=True) if not ids]
    if empty:
        raise FmgaugeError(f"verbalisers {empty} tokenise to nothing; give non-empty answer texts.")
    if len({tuple(v) for v in verb}) != len(verb):
        raise FmgaugeError(f"verbalisers {verbalisers} do not tokenise to distinct token sequences.")
    return Prompts(prompts, verb, n_trunc)


# ----------------------------------------------------------------------------------------------------- scoring
def _logprobs(model, h: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the LM head on hidden states h (R, d) -> (R, V) float32 (with Gemma-2-style soft-capping)."""
    import torch

    logits = model.get_output_embeddings()(h).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)


def score_batch(model, prompts: list[list[int]], verbalisers: list[list[int]], *, pad_id: int,
                device: torch.device) -> torch.Tensor:
    """(B, M) float64 sum of log P(verbaliser m tokens | prompt b), with one prompt forward and a shared KV cache."""
    import torch

    with torch.inference_mode():
        b, m = len(prompts), len(verbalisers)
        width = max(len(p) for p in prompts)
        ids = torch.full((b, width), pad_id, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding: every prompt ends at column width - 1
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)  # (B, L) positions 0.. from each prompt's first real token
        base = model.base_model
        out = base(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                   use_cache=True)
        first = _logprobs(model, out.last_hidden_state[:, -1])  # (B, V) next-token log-probs after each prompt
        scores = first[:, [v[0] for v in verbalisers]].double()  # (B, M)
        t_max = max(len(v) for v in verbalisers)
        if t_max == 1:
            return scores.cpu()
        cache = out.past_key_values
        cache.batch_repeat_interleave(m)  # row b*M + k holds prompt b's cache
        cin = torch.full((m, t_max - 1), pad_id, dtype=torch.long)  # continuation inputs v_1..v_(T-1), right-padded
        cmask = torch.zeros((m, t_max - 1), dtype=torch.long)
        for k, v in enumerate(verbalisers):
            cin[k, :len(v) - 1] = torch.tensor(v[:-1], dtype=torch.long)
            cmask[k, :len(v) - 1] = 1
        full_mask = torch.cat([mask.repeat_interleave(m, 0), cmask.repeat(b, 1)], 1)  # (B*M, L + T - 1)
        cpos = pos[:, -1:].repeat_interleave(m, 0) + 1 + torch.arange(t_max - 1)  # (B*M, T - 1)
        h = base(input_ids=cin.repeat(b, 1).to(device), attention_mask=full_mask.to(device),
                 position_ids=cpos.to(device), past_key_values=cache, use_cache=True).last_hidden_state  # (B*M, T-1, d)
        rows, cols, targets, owner = [], [], [], []
        for bi in range(b):
            for k, v in enumerate(verbalisers):
                for t in range(1, len(v)):  # hidden state at continuation position t-1 predicts v_t
                    rows.append(bi * m + k)
                    cols.append(t - 1)
                    targets.append(v[t])
                    owner.append(bi * m + k)
        lp = _logprobs(model, h[torch.tensor(rows), torch.tensor(cols)])  # (R, V), R = B * sum_k (T_k - 1)
        vals = lp[torch.arange(len(rows)), torch.tensor(targets)].double().cpu()
        flat = torch.zeros(b * m, dtype=torch.float64).index_add_(0, torch.tensor(owner), vals)
        return scores.cpu() + flat.view(b, m)


def reference_scores(model, prompt: list[int], verbalisers: list[list[int]], *, device: torch.device) -> np.ndarray:
    """(M,) sum of log P(verbaliser tokens | prompt) by a plain full forward of prompt + verbaliser, no padding."""
    import torch

    out = []
    with torch.inference_mode():
        for v in verbalisers:
            ids = torch.tensor([prompt + v], device=device)
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)  # (L, V)
            out.append(sum(lp[len(prompt) - 1 + t, v[t]].item() for t in range(len(v))))
    return np.array(out)


def score_texts(model, prompts: Prompts, *, pad_id: int, device: torch.device, batch_size: int,
                check: bool = True, progress: str | None = None) -> np.ndarray:
    """(N, M) summed verbaliser-token log-probs of every prompt, batched by prompt length (the first batch
    self-checked against :func:`reference_scores` when ``check``)."""
    from fmgauge.core.progress import progress as progress_tracker

    n = len(prompts.prompts)
    order = np.argsort([len(p) for p in prompts.prompts], kind="stable")
    out = np.zeros((n, len(prompts.verbalisers)))
    with progress_tracker(progress or "scoring", n, unit="text", enabled=progress is not None) as bar:
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            batch = [prompts.prompts[i] for i in idx]
            out[idx] = score_batch(model, batch, prompts.verbalisers, pad_id=pad_id, device=device).numpy()
            if check and s == 0:
                _self_check(model, batch, prompts.verbalisers, out[idx[0]], device=device)
            bar.advance(len(idx))
    return out


def _self_check(model, batch: list[list[int]], verbalisers: list[list[int]], got: np.ndarray, *,
                device: torch.device) -> None:
    import torch

    ref = reference_scores(model, batch[0], verbalisers, device=device)
    err = float(np.abs(ref - got).max())
    rel = 1e-3 if next(model.parameters()).dtype == torch.float32 else 5e-2  # bf16/fp16 round at ~1e-2
    if err > rel * max(10.0, float(np.abs(ref).max())):
        raise FmgaugeError(
            f"the cached, padded verbaliser scores differ from a plain forward by {err:.3g} nats on the first text; "
            "this model's output layer or attention masking is not what the causal-lm labeler assumes "
            "(lm_head + optional final_logit_softcapping, position ids from the attention mask)."
        )
    log.debug("causal-lm self-check: max |cached - plain| = %.2e nats", err)


# ----------------------------------------------------------------------------------------------------- labeler
def build_prompts(cfg: CausalLMLabeler, tokenizer, ds: Dataset, texts: list[str]) -> tuple[Prompts, np.ndarray]:
    """The prompts and verbalisers for ``texts``, and group (M,) mapping scored classes onto dataset classes."""
    sc = scored_classes(ds, cfg.verbalisers, cfg.rest_classes, field="verbalisers")
    names = list(sc.names)
    before, after = prompt_pieces(cfg, tokenizer, ", ".join(names), ds)
    prompts = encode_prompts(tokenizer, texts, before, after, max_text_tokens=cfg.max_text_tokens,
                             answer_prefix=cfg.prefix(), verbalisers=names, add_special=not cfg.chat_template)
    return prompts, np.asarray(sc.group)


def softmax(s: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (N, M) -> (N, M) float64."""
    p = np.exp(s - s.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def verbaliser_scores(cfg: CausalLMLabeler, ds: Dataset, split: str, texts: np.ndarray) -> dict[str, np.ndarray]:
    """Cached raw scores: ``scores`` (N, M) and ``content_free`` (3, M) sums of verbaliser-token log-probs,
    ``n_tokens`` (M,) verbaliser lengths. Keyed by what changes them (model identity, texts hash,
    prompt (resolved for ``ds``), verbalisers, max_text_tokens, dtype), so ``score`` and ``calibrate`` reuse one
    model run, and one-vs-rest tasks with all classes as rest classes reuse the multi-class run."""
    from fmgauge.core.text_models import load_text_model

    sc = scored_classes(ds, cfg.verbalisers, cfg.rest_classes, field="verbalisers")
    key = {**model_identity(cfg.model), "texts": texts_hash(texts), "n": len(texts), "classes": sc.names,
           "template": cfg.prompt_template(ds),
           **cfg.model_dump(include={"chat_template", "answer_prefix", "max_text_tokens", "dtype"})}

    def compute() -> dict[str, np.ndarray]:
        tm = load_text_model(cfg.model, task="causal-lm", device=cfg.device, dtype=cfg.dtype)
        prompts, _ = build_prompts(cfg, tm.tokenizer, ds, list(texts))
        if prompts.n_truncated:
            log.warning("causal-lm %s: %d of %d texts of %s/%s are longer than max_text_tokens=%d tokens and "
                        "were cut to their first %d tokens", cfg.model, prompts.n_truncated, len(texts), ds.name,
                        split, cfg.max_text_tokens, cfg.max_text_tokens)
        cf, _ = build_prompts(cfg, tm.tokenizer, ds, list(CONTENT_FREE))
        pad = tm.tokenizer.pad_token_id if tm.tokenizer.pad_token_id is not None else 0
        t0 = time.perf_counter()
        with torch_threads() as threads:
            s = score_texts(tm.model, prompts, pad_id=pad, device=tm.device, batch_size=cfg.batch_size,
                            progress=f"{cfg.model} labelling {ds.name}/{split}")
            s_cf = score_texts(tm.model, cf, pad_id=pad, device=tm.device, batch_size=cfg.batch_size, check=False)
        dt = time.perf_counter() - t0
        log.info("causal-lm %s: %d texts in %.1f s (%.2f texts/s, %d threads, %d truncated)", cfg.model,
                 len(texts), dt, len(texts) / dt, threads, prompts.n_truncated)
        return {"scores": s, "content_free": s_cf,
                "n_tokens": np.array([len(v) for v in prompts.verbalisers]),
                "n_truncated": np.array(prompts.n_truncated), "seconds": np.array(dt)}

    return cached_arrays("lm-scores", key, compute)


def label_causal_lm(cfg: CausalLMLabeler, ds: Dataset, split: str) -> LabelerOutput:
    """Zero-shot labels of a text split: probs (N, K) by the module docstring's formula, labels = argmax."""
    ids, texts = split_texts(ds, split, labeler="causal-lm")
    group = scored_classes(ds, cfg.verbalisers, cfg.rest_classes, field="verbalisers").group  # not from the
    raw = verbaliser_scores(cfg, ds, split, texts)  # cache: one-vs-rest shares the multi-class scores
    s, s_cf = raw["scores"], raw["content_free"]  # (N, M), (3, M)
    if cfg.score == "mean":
        s, s_cf = s / raw["n_tokens"], s_cf / raw["n_tokens"]
    if cfg.calibrate == "content-free":
        prior = softmax(s_cf).mean(0)  # (M,) p_cf, Zhao et al. 2021 eq. (1) with W = diag(p_cf)^-1
        s = s - np.log(prior)  # softmax(s - log p_cf) = normalise(p / p_cf)
    probs = pool_classes(softmax(s), np.asarray(group), ds.n_classes)
    return LabelerOutput(ids=ids, probs=probs, labels=probs.argmax(1).astype(np.int64))


LABELERS.add("causal-lm", LabelerKind(CausalLMLabeler, label_causal_lm))
