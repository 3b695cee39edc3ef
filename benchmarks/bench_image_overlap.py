"""Image-overlap benchmarks (CPU, 1 thread): embedding throughput and nearest-neighbour search cost, projected to
PMC-OA's 1.6 M images.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py embed
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py search
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py markdown

``embed``: images/second of the dct embedder on real MedMNIST images (in memory, and read from PNG files through
the chunked cache), and of open_clip SigLIP image towers at their real sizes (ViT-B-16-SigLIP, ViT-SO400M-14-SigLIP)
built from open_clip's architecture configs with random weights: no weights are available offline, and speed does
not depend on the weights' values. ``search``: synthetic unit vectors at the real embedding widths (768 for
SigLIP-B/16, 1152 for SO400M), clustered like real embeddings (a mixture of 2,000 directions), with queries that
are half near-duplicates of reference vectors (cosine ~0.95) and half fresh draws; exact (streamed), IVF and HNSW
at fmgauge's default settings: build seconds, queries/second, recall@1/@5 against exact, memory. Results go to
``benchmarks/results/image_overlap_<part>.json``; ``markdown`` prints the docs/benchmarks.md section.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEDMNIST = ROOT / ".." / "shared" / "data" / "medmnist"
PMC_OA = 1_600_000


def _machine() -> dict:
    import faiss
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            "faiss": faiss.__version__, "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
            "note": "2 cores shared with other jobs during the run"}


def _save(part: str, obj: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"image_overlap_{part}.json").write_text(json.dumps(obj, indent=1, default=float))


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def bench_embed() -> dict:
    import open_clip
    import torch
    from PIL import Image

    from fmgauge.contamination.embed_cache import embed_image_set
    from fmgauge.contamination.embedders import DCTEmbedder, OpenClipEmbedder
    from fmgauge.contamination.images import open_image_set, to_rgb

    out: dict = {"machine": _machine(), "rows": []}
    with np.load(MEDMNIST / "pneumoniamnist.npz") as z:
        imgs = z["train_images"][:4000]
    pil = [to_rgb(Image.fromarray(a)) for a in imgs]
    dct = DCTEmbedder()
    t = time.perf_counter()
    for i in range(0, len(pil), 256):
        dct.embed(pil[i:i + 256])
    s = time.perf_counter() - t
    out["rows"].append({"embedder": "dct", "input": "4,000 MedMNIST 28 px images in memory", "images": len(pil),
                        "seconds": s, "images_per_s": len(pil) / s})
    with tempfile.TemporaryDirectory() as d:
        os.environ["FMGAUGE_CACHE"] = str(Path(d) / "cache")
        (Path(d) / "png").mkdir()
        for i, a in enumerate(imgs[:1000]):
            Image.fromarray(a).resize((224, 224), Image.BICUBIC).save(Path(d) / "png" / f"{i:04d}.png")
        s_set = open_image_set(str(Path(d) / "png"))
        t = time.perf_counter()
        embed_image_set(s_set, dct, chunk=256, progress=False)
        s = time.perf_counter() - t
        out["rows"].append({"embedder": "dct", "input": "1,000 PNG files 224 px: decode + embed + cache write",
                            "images": 1000, "seconds": s, "images_per_s": 1000 / s})
        t = time.perf_counter()
        embed_image_set(s_set, dct, chunk=256, progress=False)  # all cached
        s = time.perf_counter() - t
        out["rows"].append({"embedder": "dct", "input": "the same 1,000 files, second run (cache hit)",
                            "images": 1000, "seconds": s, "images_per_s": 1000 / s})
    for arch, n in (("ViT-B-16-SigLIP", 16), ("ViT-SO400M-14-SigLIP", 4)):
        model = open_clip.create_model(arch, pretrained=None).eval()
        pp = open_clip.get_model_preprocess_cfg(model)
        preprocess = open_clip.image_transform(pp["size"], is_train=False, mean=pp["mean"], std=pp["std"])
        emb = OpenClipEmbedder(arch, device="cpu")
        emb._loaded = (model, preprocess, torch.device("cpu"), torch.float32)  # random weights: same speed
        emb.embed(pil[:1])  # warm-up
        t = time.perf_counter()
        e = emb.embed(pil[:n])
        s = time.perf_counter() - t
        out["rows"].append({"embedder": arch, "input": f"{n} MedMNIST images -> {pp['size'][0]} px, batch {n}",
                            "images": n, "seconds": s, "images_per_s": n / s, "dim": int(e.shape[1]),
                            "params_M": sum(p.numel() for p in model.visual.parameters()) / 1e6})
        del model, emb
    for r in out["rows"]:
        r["projected_hours_1p6M"] = PMC_OA / r["images_per_s"] / 3600
    _save("embed", out)
    return out


def clustered(n: int, d: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """n unit vectors near random centres (cosine to the centre ~0.7): the shape of real embedding clouds."""
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_search(sizes=(10_000, 100_000), dims=(768, 1152), n_queries=1000) -> dict:
    from fmgauge.contamination.neighbours import IndexConfig, build_index, exact_search, ivf_params

    out: dict = {"machine": _machine(), "rows": []}
    for d in dims:
        for n in sizes:
            rng = np.random.default_rng(0)
            centres = rng.normal(size=(2000, d)).astype(np.float32)
            centres /= np.linalg.norm(centres, axis=1, keepdims=True)
            ref = clustered(n, d, rng, centres)
            half = n_queries // 2
            dup = ref[rng.choice(n, half, replace=False)] + rng.normal(size=(half, d)).astype(np.float32) * 0.23 / np.sqrt(d)
            q = np.vstack([dup / np.linalg.norm(dup, axis=1, keepdims=True), clustered(half, d, rng, centres)])
            chunks = lambda ref=ref: (ref[i:i + 4096] for i in range(0, len(ref), 4096))  # noqa: E731
            t = time.perf_counter()
            e_s, e_i = exact_search(q, chunks(), 5)
            t_exact = time.perf_counter() - t
            base = {"dim": d, "n": n, "queries": len(q), "vectors_MiB": ref.nbytes / 2**20,
                    "dup_query_top1_cos_median": float(np.median(e_s[:half, 0]))}
            out["rows"].append({**base, "index": "exact (streamed)", "build_s": 0.0, "qps": len(q) / t_exact,
                                "recall_at_1": 1.0, "recall_at_5": 1.0, "index_MiB": 0.0, "rss_delta_MiB": 0.0})
            print(out["rows"][-1], flush=True)
            for kind in ("ivf", "hnsw"):
                if kind == "hnsw" and n * d > 100_000 * 768:
                    continue  # HNSW build at 100k x 1152 on one shared core would exceed the time budget
                rss0 = _rss()
                index = build_index(chunks, n, d, IndexConfig(kind=kind))
                rss1 = _rss()
                t = time.perf_counter()
                a_s, a_i = index.search(q, 5)
                t_q = time.perf_counter() - t
                r1 = float(np.mean((a_i[:, 0] == e_i[:, 0]) | (a_s[:, 0] >= e_s[:, 0] - 1e-6)))
                r5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(a_i, e_i, strict=True)]))
                r1_dup = float(np.mean(a_i[:half, 0] == e_i[:half, 0]))
                out["rows"].append({**base, "index": kind, "params": index.params, "build_s": index.build_seconds,
                                    "qps": len(q) / t_q, "recall_at_1": r1, "recall_at_5": r5,
                                    "recall_at_1_near_duplicates": r1_dup,
                                    "index_MiB": index.memory_bytes() / 2**20, "rss_delta_MiB": (rss1 - rss0) / 2**20})
                print(out["rows"][-1], flush=True)
                del index
            _save("search", out)
    # projections to 1.6 M: exact cost is linear in N; IVF at default nlist/nprobe scans nprobe/nlist of the vectors
    proj = []
    for d in dims:
        ex = next(r for r in out["rows"] if r["dim"] == d and r["n"] == max(sizes) and r["index"].startswith("exact"))
        nlist, nprobe = ivf_params(IndexConfig(), PMC_OA)
        iv = next(r for r in out["rows"] if r["dim"] == d and r["n"] == max(sizes) and r["index"] == "ivf")
        nl0, np0 = iv["params"]["nlist"], iv["params"]["nprobe"]
        scan0 = np0 / nl0 * max(sizes) + nl0
        scan1 = nprobe / nlist * PMC_OA + nlist
        proj.append({"dim": d, "exact_qps_1p6M": ex["qps"] * max(sizes) / PMC_OA,
                     "ivf_qps_1p6M": iv["qps"] * scan0 / scan1, "ivf_params_1p6M": {"nlist": nlist, "nprobe": nprobe},
                     "vectors_GiB_1p6M": PMC_OA * d * 4 / 2**30,
                     "hnsw_extra_GiB_1p6M": PMC_OA * 2 * 32 * 4 / 2**30})
    out["projection"] = proj
    _save("search", out)
    return out


def markdown() -> str:
    e = json.loads((RESULTS / "image_overlap_embed.json").read_text())
    s = json.loads((RESULTS / "image_overlap_search.json").read_text())
    lines = ["### Embedding throughput", "",
             f"Machine: {e['machine']['cpu']}, OMP_NUM_THREADS={e['machine']['omp_threads']}, load average "
             f"{e['machine']['load_avg_1m_at_start']} at the start ({e['machine']['note']}).", "",
             "| embedder | input | images | seconds | images/s | hours for 1.6 M |", "|---|---|---|---|---|---|"]
    for r in e["rows"]:
        lines.append(f"| {r['embedder']} | {r['input']} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} |"
                     f" {r['projected_hours_1p6M']:.2f} |")
    lines += ["", "### Search (synthetic clustered unit vectors at the real widths, 1,000 queries, k = 5)", "",
              "| D | N | index | params | build s | queries/s | recall@1 | recall@5 | recall@1 near-dups | index MiB | "
              "RSS growth MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['dim']} | {r['n']:,} | {r['index']} | {r.get('params', '')} | {r['build_s']:.1f} | "
                     f"{r['qps']:.0f} | {r['recall_at_1']:.3f} | {r['recall_at_5']:.3f} | "
                     f"{r.get('recall_at_1_near_duplicates', 1.0):.3f} | {r['index_MiB']:.0f} | {r['rss_delta_MiB']:.0f} |")
    lines += ["", "Projected to PMC-OA (1.6 M reference images):", "",
              "| D | vectors (GiB, cache on disk / IVF in RAM) | exact queries/s | IVF queries/s (nlist, nprobe) | HNSW "
              "links extra GiB |", "|---|---|---|---|---|"]
    for p in s["projection"]:
        lines.append(f"| {p['dim']} | {p['vectors_GiB_1p6M']:.1f} | {p['exact_qps_1p6M']:.1f} | {p['ivf_qps_1p6M']:.0f} "
                     f"({p['ivf_params_1p6M']['nlist']}, {p['ivf_params_1p6M']['nprobe']}) | "
                     f"{p['hnsw_extra_GiB_1p6M']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    part = sys.argv[1] if len(sys.argv) > 1 else "all"
    if part in ("embed", "all"):
        bench_embed()
    if part in ("search", "all"):
        bench_search()
    if part in ("markdown", "all"):
        print(markdown())
