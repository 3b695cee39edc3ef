"""The largest text student: a pretrained transformer encoder fine-tuned end to end (default minilm-l6).

Per seed: the encoder (``load_text_model(model, "sequence-classification")``; its classification head is freshly
initialised under the seed) is trained with AdamW (linear warm-up over the first 10% of steps, then linear decay,
the BERT fine-tuning recipe) on the seed's training set for the study's budget (``students.budget_steps``: the
same number of steps for every condition) of ``batch_size`` texts truncated to ``max_length`` tokens, then
predicts the test texts. The texts are tokenised once per call; batches are padded
to their longest member. This is the expensive student of the study: give it a small grid (configs do).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fmgauge.core.validation import FmgaugeError


def _tokenise(tokenizer, texts: np.ndarray, max_length: int) -> list[list[int]]:  # noqa: ANN001
    enc = tokenizer([str(t) for t in texts], truncation=True, max_length=max_length)
    return enc["input_ids"]


def _batch(ids: list[list[int]], rows: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) input ids padded to the longest row, and the (B, L) attention mask."""
    seqs = [ids[r] for r in rows]
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return out, mask


def _warmup_linear(warm: int, steps: int):  # noqa: ANN202
    """LR multiplier: linear warm-up over ``warm`` steps, then linear decay to 0 at ``steps``."""
    return lambda t: min((t + 1) / warm, max(0.0, (steps - t) / max(1, steps - warm)))


def fit_predict_finetune(
    cfg, texts_pool: np.ndarray, idx: np.ndarray, y_train: np.ndarray, texts_test: np.ndarray,  # noqa: ANN001
    seeds: list[int], n_classes: int, *, steps: int | None = None,
) -> np.ndarray:
    """Fine-tune ``cfg.model`` once per seed on ``texts_pool[idx[s]]`` with labels ``y_train[s]``.

    ``idx``, ``y_train``: (S, N); ``texts_pool`` (N_pool,) and ``texts_test`` (M,) str. Returns (S, M, K) float32.
    ``cfg``: a StudentConfig (model, max_length, epochs, min_steps, batch_size, lr, weight_decay); ``steps``: the
    budget (default ``budget_steps(cfg, N)``).
    """
    from fmgauge.core.text_models import load_text_model
    from fmgauge.weaklabels.students import budget_steps

    idx, y_train = np.asarray(idx), np.asarray(y_train)
    if idx.shape != y_train.shape or idx.ndim != 2 or len(seeds) != len(idx):
        raise FmgaugeError(f"fit_predict_finetune: idx {idx.shape}, y_train {y_train.shape} and {len(seeds)} seeds "
                           "disagree; both must be (S, N).")
    out = np.zeros((len(seeds), len(texts_test), n_classes), dtype=np.float32)
    tok_ids: list[list[int]] | None = None
    test_ids: list[list[int]] | None = None
    for r, seed in enumerate(seeds):
        torch.manual_seed(seed)
        tm = load_text_model(cfg.model, "sequence-classification", device="cpu", num_labels=n_classes)
        model, tok = tm.model, tm.tokenizer
        if tok_ids is None:
            tok_ids = _tokenise(tok, texts_pool, cfg.max_length)
            test_ids = _tokenise(tok, texts_test, cfg.max_length)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        n = idx.shape[1]
        bs = min(cfg.batch_size, n)
        steps = budget_steps(cfg, n) if steps is None else int(steps)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_linear(warm, steps))
        gen = np.random.default_rng([seed, 31])
        order = np.concatenate([gen.permutation(n) for _ in range(math.ceil(steps * bs / n) + 1)])
        labels = torch.from_numpy(y_train[r]).long()
        model.train()
        for t in range(steps):
            pick = order[t * bs:(t + 1) * bs]
            x, mask = _batch(tok_ids, idx[r][pick], pad)
            loss = torch.nn.functional.cross_entropy(model(input_ids=x, attention_mask=mask).logits, labels[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(test_ids), 64):
                x, mask = _batch(test_ids, np.arange(i, min(i + 64, len(test_ids))), pad)
                out[r, i:i + len(x)] = torch.softmax(model(input_ids=x, attention_mask=mask).logits, -1).numpy()
    return out
