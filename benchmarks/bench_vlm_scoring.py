"""What VLM answer-token scoring costs at the real models' widths (CPU), projected to their full depth.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_vlm_scoring.py

No VLM weights are reachable offline, so this builds random-init models with the exact widths, vocabularies and
vision towers of Qwen2.5-VL-3B-Instruct and BLIP-2 OPT-2.7B but only a few layers, times the scoring forward of
:func:`fmgauge.contamination.vlm_scoring.forward_answer_stats` (image tower + language model + the answer tokens'
full-vocabulary statistics) on a SLAKE-like item at three depths (language layers L_t, vision layers L_v), takes the
per-layer costs from the differences and projects to the full depth (Qwen2.5-VL-3B: 36 / 32; BLIP-2: 32 OPT
layers, 39 ViT layers; its 12-layer Q-Former is built at full depth throughout). It also times
the same forward forming the logits of every position instead of the answer's (``logits_to_keep``). Random weights
cost the same FLOPs as trained ones; the projection assumes cost linear in depth (true of a transformer stack).

Writes ``benchmarks/results/vlm_scoring.json`` row by row (a rerun keeps measured rows and only re-renders when
all are there); the markdown of docs/benchmarks.md §10 is printed at the end.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "vlm_scoring.json"
PROMPT_TOKENS, ANSWER_TOKENS, IMAGE_PX = 32, 3, 512  # SLAKE-like: short question and answer, a 512 px image
REPS = 1  # after one warm-up forward (the machine is shared; each forward takes seconds to minutes)


def _qwen(lt: int, lv: int):  # noqa: ANN202
    import transformers

    cfg = transformers.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=lt,
                         num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                         tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                    "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=lv, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                           window_size=112, fullatt_block_indexes=[i for i in (7, 15, 23, 31) if i < lv] or [lv - 1],
                           tokens_per_second=2),
        tie_word_embeddings=True)
    return transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()


def _blip2(lt: int, lv: int):  # noqa: ANN202
    import transformers

    cfg = transformers.Blip2Config(
        vision_config=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=lv, num_attention_heads=16,
                           image_size=224, patch_size=14),
        qformer_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            cross_attention_frequency=2),
        text_config=dict(model_type="opt", vocab_size=50272, hidden_size=2560, ffn_dim=10240, num_hidden_layers=lt,
                         num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2560),
        num_query_tokens=32, image_token_index=50265)
    return transformers.Blip2ForConditionalGeneration(cfg).eval()


class _VM:
    """The attributes forward_answer_stats reads from a VisionLanguageModel."""

    def __init__(self, model, family: str) -> None:  # noqa: ANN001
        self.model, self.family, self.device, self.encoder_decoder = model, family, torch.device("cpu"), False


def _item(family: str, model) -> object:  # noqa: ANN001
    """A SLAKE-like encoded item: the real image processor's pixels, random token ids of the usual lengths."""
    import transformers
    from PIL import Image

    from fmgauge.contamination.vlm_scoring import _Encoded

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (IMAGE_PX, IMAGE_PX, 3), dtype=np.uint8))
    words = list(rng.integers(1000, 50000, PROMPT_TOKENS))
    answer = [int(t) for t in rng.integers(1000, 50000, ANSWER_TOKENS)]
    if family == "qwen-vl":
        enc = transformers.Qwen2VLImageProcessor()(images=[img], return_tensors="pt")
        n_img = int(enc["image_grid_thw"].prod()) // 4
        ids = words[:20] + [model.config.vision_start_token_id] + [model.config.image_token_id] * n_img + \
            [model.config.vision_end_token_id] + words[20:]
        vision = {"pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}
    else:
        enc = transformers.BlipImageProcessor(size={"height": 224, "width": 224})(images=[img], return_tensors="pt")
        ids = [model.config.image_token_index] * 32 + [2] + words
        vision = {"pixel_values": enc["pixel_values"]}
    return _Encoded([int(t) for t in ids], answer, vision)


def _time(fn) -> float:  # noqa: ANN001
    fn()  # warm-up
    ts = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def measure(family: str, done: list[dict], save) -> dict:  # noqa: ANN001
    from fmgauge.contamination.vlm_scoring import forward_answer_stats

    build, full = (_qwen, (36, 32)) if family == "qwen-vl" else (_blip2, (32, 39))
    rows = list(done)
    for lt, lv in ((2, 2), (4, 2), (2, 4)):
        if any((r["text_layers"], r["vision_layers"]) == (lt, lv) for r in rows):
            continue  # measured by an earlier (interrupted) run
        torch.manual_seed(0)
        model = build(lt, lv)
        vm, item = _VM(model, family), None
        item = _item(family, model)
        row = {"text_layers": lt, "vision_layers": lv, "seq_tokens": len(item.ids) + len(item.answer),
               "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
        row["seconds"] = _time(lambda vm=vm, item=item: forward_answer_stats(vm, [item], pad_id=0))
        if (lt, lv) == (2, 2):
            ids = torch.tensor([item.ids + item.answer])
            kw = {"input_ids": ids, "pixel_values": item.vision["pixel_values"]}
            if family == "qwen-vl":
                kw |= {"image_grid_thw": item.vision["image_grid_thw"],
                       "mm_token_type_ids": (ids == model.config.image_token_id).long()}

            def all_logits(model=model, kw=kw) -> None:
                with torch.no_grad():
                    model(**kw).logits.float().log_softmax(-1)

            row["seconds_all_logits"] = _time(all_logits)
        rows.append(row)
        save(family, rows)
        print(family, row, flush=True)
        del model
    return project(rows, full)


def project(rows: list[dict], full: tuple[int, int]) -> dict:
    """Per-layer costs from the (4, 2) and (2, 4) rows against (2, 2); a negative slope (timing noise on the
    shared machine exceeding that layer's cost) counts as 0; full depth = (2, 2) + slopes × the missing layers."""
    t = {(r["text_layers"], r["vision_layers"]): r["seconds"] for r in rows}
    a = (t[(4, 2)] - t[(2, 2)]) / 2
    b = (t[(2, 4)] - t[(2, 2)]) / 2
    return {"rows": rows, "fit": {"per_text_layer": a, "per_vision_layer": b},
            "full_depth": {"text_layers": full[0], "vision_layers": full[1]},
            "projected_seconds_per_item": t[(2, 2)] + max(a, 0) * (full[0] - 2) + max(b, 0) * (full[1] - 2)}


def markdown(res: dict) -> str:
    m = res["machine"]
    out = ["Command: `OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_vlm_scoring.py`  ",
           f"torch {m['torch']}, {m['torch_threads']} threads, load average at start {m['load_avg_1m_at_start']} "
           f"(machine shared with other jobs), peak RSS {res['peak_rss_gb']:.1f} GB. Random-init models at the real "
           f"widths and vocabularies with few layers; one SLAKE-like item ({IMAGE_PX}x{IMAGE_PX} image, "
           f"{PROMPT_TOKENS}-token question, {ANSWER_TOKENS}-token answer), one forward after a warm-up (the first "
           "two Qwen rows: median of 3); per-layer costs from the differences between rows, a negative one (timing "
           "noise larger than that layer's cost) counted as 0, projected to full depth.", "",
           "| model | L_text | L_vision | sequence tokens | params (M) | s / item | s / item, all logits |",
           "|---|---|---|---|---|---|---|"]
    for fam, name in (("qwen-vl", "Qwen2.5-VL-3B shape"), ("blip2", "BLIP-2 OPT-2.7B shape")):
        for r in res[fam]["rows"]:
            out.append(f"| {name} | {r['text_layers']} | {r['vision_layers']} | {r['seq_tokens']} | {r['params_m']} "
                       f"| {r['seconds']:.2f} | {r.get('seconds_all_logits', float('nan')):.2f} |")
    out.append("")
    for fam, name, n in (("qwen-vl", "Qwen2.5-VL-3B", 1061), ("blip2", "BLIP-2 OPT-2.7B", 1061)):
        f, s = res[fam]["fit"], res[fam]["projected_seconds_per_item"]
        d = res[fam]["full_depth"]
        out.append(f"- {name}: {f['per_text_layer']:.2f} s per language layer, "
                   f"{f['per_vision_layer']:.2f} s per vision layer -> **{s:.0f} s per item** at full depth "
                   f"({d['text_layers']} / {d['vision_layers']} layers), about {s * n / 3600:.1f} h for the 1,061 "
                   "SLAKE-En test items on this CPU (float32).")
    return "\n".join(out)


def main() -> None:
    load = os.getloadavg()
    res = json.loads(OUT.read_text()) if OUT.exists() else {}  # resume: measured rows are kept
    res.setdefault("machine", {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                               "torch_threads": torch.get_num_threads(), "load_avg_1m_at_start": round(load[0], 2)})
    OUT.parent.mkdir(parents=True, exist_ok=True)

    def save(fam: str, rows: list[dict]) -> None:
        res.setdefault(fam, {})["rows"] = rows
        res["peak_rss_gb"] = max(res.get("peak_rss_gb", 0.0),
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
        OUT.write_text(json.dumps(res, indent=1, default=float))

    for fam in ("qwen-vl", "blip2"):
        res[fam] = measure(fam, res.get(fam, {}).get("rows", []), save)
        save(fam, res[fam]["rows"])
    print(markdown(json.loads(OUT.read_text())))


if __name__ == "__main__":
    main()
