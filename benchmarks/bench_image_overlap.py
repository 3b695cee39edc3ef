"""Image-overlap benchmarks (CPU, 1 thread): embedding throughput and nearest-neighbour search cost, projected to
PMC-OA's 1.6 M images.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py embed
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py search
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py markdown
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py copy-train
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py copy-quality
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py copy-speed
    PYTHONPATH=src .venv/bin/python benchmarks/bench_image_overlap.py copy-markdown

``embed``: images/second of the dct embedder on real MedMNIST images (in memory, and read from PNG files through
the chunked cache), and of open_clip SigLIP image towers at their real sizes (ViT-B-16-SigLIP, ViT-SO400M-14-SigLIP)
built from open_clip's architecture configs with random weights: no weights are available offline, and speed does
not depend on the weights' values. ``search``: synthetic unit vectors at the real embedding widths (768 for
SigLIP-B/16, 1152 for SO400M), clustered like real embeddings (a mixture of 2,000 directions), with queries that
are half near-duplicates of reference vectors (cosine ~0.95) and half fresh draws; exact (streamed), IVF and HNSW
at fmgauge's default settings: build seconds, queries/second, recall@1/@5 against exact, memory. Results go to
``benchmarks/results/image_overlap_<part>.json``; ``markdown`` prints the docs/benchmarks.md section.

The copy detector (issue #25): ``copy-train`` trains the copy embedder at its defaults (64 px, 6 epochs) on 10,000
images (the 8,236 MedMNIST images of the three datasets, upsampled from 28 px, plus 1,764 of them a second time:
training cost depends only on the count) with 1 torch thread (a first run with 2 threads on the loaded shared
machine spent 5 min of CPU on 2 of 6 epochs, spinning at OpenMP barriers), wall and CPU seconds. ``copy-quality`` plants
copies of PneumoniaMNIST test images in the PneumoniaMNIST train split (7 families, 40 each) and runs
``image-overlap`` with both controls; recall per family and false flags among never-copied images for the copy
detector, its embedder alone, and dct under either control. ``copy-speed`` measures embedding and search
throughput of the trained embedder and the verification cost per candidate pair, projected to 1.6 M images.
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


# ------------------------------------------------------------------------------------------ copy detector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from copy_families import FAMILIES as TEST_FAMILIES  # noqa: E402 - the tests' copy families
from copy_families import plant  # noqa: E402

FAMILIES = (*TEST_FAMILIES, "harder")
PER_FAMILY = 40


def _load(name: str, split: str | None = None) -> np.ndarray:
    with np.load(MEDMNIST / f"{name}.npz") as z:
        splits = [split] if split else ["train", "val", "test"]
        arrs = [z[f"{s}_images"] for s in splits]
    arrs = [a if a.ndim == 3 else a.mean(-1).round().astype(np.uint8) for a in arrs]  # RetinaMNIST is RGB
    return np.concatenate(arrs)


def _cpu_wall(fn):
    import resource

    t, c = time.perf_counter(), time.process_time()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c + (resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                                                                     - ch0.ru_utime)


def bench_copy_train() -> dict:
    import torch

    from fmgauge.contamination.copy_embedder import CopyEmbedderConfig, train_copy_embedder, training_manifest
    from fmgauge.contamination.images import open_image_set

    imgs = np.concatenate([_load("pneumoniamnist"), _load("retinamnist"), _load("breastmnist")])
    n_distinct = len(imgs)
    imgs = np.concatenate([imgs, imgs[np.random.default_rng(0).choice(n_distinct, 10_000 - n_distinct, replace=False)]])
    out: dict = {"machine": _machine(), "images": len(imgs), "distinct": n_distinct}
    with tempfile.TemporaryDirectory() as d:
        os.environ["FMGAUGE_CACHE"] = str(Path(d) / "cache")
        np.savez(Path(d) / "train.npz", train_images=imgs)
        cfg = CopyEmbedderConfig(threads=1)  # 2 threads spin at OpenMP barriers on a loaded shared machine
        out["config"] = cfg.model_dump(mode="json")
        rss0 = _rss()
        emb, wall, cpu = _cpu_wall(lambda: train_copy_embedder(open_image_set(f"{d}/train.npz:train"), cfg))
        man = training_manifest(emb)
    out.update({"wall_s": wall, "cpu_s": cpu, "torch_threads": 1, "history": man["history"],
                "rss_growth_MiB": (_rss() - rss0) / 2**20, "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                "torch": torch.__version__})
    print(out, flush=True)
    _save("copy_train", out)
    return out


def _scenario(root: Path) -> dict:
    rng = np.random.default_rng(0)
    bench = _load("pneumoniamnist", "test")
    n_plant = PER_FAMILY * len(FAMILIES)
    fam = [FAMILIES[i % len(FAMILIES)] for i in range(n_plant)]
    copies = np.stack([plant(bench[i], fam[i], rng) for i in range(n_plant)])
    train = _load("pneumoniamnist", "train")
    np.savez(root / "sets.npz", bench_images=bench, ref_images=np.concatenate([train, copies]),
             val_images=_load("pneumoniamnist", "val"))
    import hashlib

    md5 = [hashlib.md5(a.tobytes()).hexdigest() for a in bench]
    planted_md5 = set(md5[:n_plant])
    # a benchmark image pixel-identical to a planted one has a copy in the reference too: not "never copied"
    twins = [i for i in range(n_plant, len(bench)) if md5[i] in planted_md5]
    return {"n_ref": len(train), "n_plant": n_plant, "families": fam, "n_bench": len(bench), "twins": twins}


def _recall(score: np.ndarray, ref: np.ndarray, tau: float, sc: dict, near: np.ndarray | None = None) -> dict:
    """Per family: planted copies flagged with their own copy as the match; never-copied images flagged."""
    flag = score > tau if near is None else (score > tau) | near
    n = sc["n_plant"]
    out = {}
    for f in FAMILIES:
        idx = [i for i in range(n) if sc["families"][i] == f]
        out[f] = int(sum(flag[i] and ref[i] == sc["n_ref"] + i for i in idx))
    never = np.setdiff1d(np.arange(n, len(flag)), sc["twins"])
    out["never_flagged"] = int(flag[never].sum())
    out["never"] = int(len(never))
    out["twins_flagged"] = int(flag[sc["twins"]].sum()) if sc["twins"] else 0
    out["tau"] = float(tau)
    return out


def bench_copy_quality() -> dict:
    import pandas as pd

    from fmgauge.contamination.embed_cache import embed_image_set
    from fmgauge.contamination.embedders import DCTEmbedder
    from fmgauge.contamination.image_overlap import NEAR_IDENTICAL, ImageOverlapConfig, run_image_overlap
    from fmgauge.contamination.images import open_image_set
    from fmgauge.contamination.neighbours import exact_search
    from fmgauge.contamination.overlap import threshold_from_control

    out: dict = {"machine": _machine(), "rows": []}
    root = ROOT / "runs" / "bench" / "copy-quality"
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FMGAUGE_CACHE", str(root / "cache"))
    sc = _scenario(root)
    out["scenario"] = {k: v for k, v in sc.items() if k != "families"} | {"per_family": PER_FAMILY}
    print("benchmark images pixel-identical to a planted image (they have a copy in the reference too):",
          sc["twins"], flush=True)
    cfg = ImageOverlapConfig(benchmark=f"{root}/sets.npz:bench", reference=f"{root}/sets.npz:ref",
                             control=f"{MEDMNIST}/retinamnist.npz:test", copy_control=f"{root}/sets.npz:val",
                             chunk=2048)
    res, wall, cpu = _cpu_wall(lambda: run_image_overlap(cfg, root / "run", progress=True))
    r = res.results
    out["run"] = {"wall_s": wall, "cpu_s": cpu, "timings": r["timings"], "copy_timings": r["copy_detector"]["timings"],
                  "pairs_verified": r["copy_detector"]["pairs_verified"], "warnings": r["warnings"],
                  "training": r["copy_detector"]["embedder"]["training"], "labels": r["labels"],
                  "questions": r["questions"], "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    cp = res.copies
    best = {s: cp[(cp.set == s) & cp.best].set_index("row").sort_index() for s in ("benchmark", "copy_control")}
    q = r["questions"]["copies"]
    bb = best["benchmark"]
    near_b = bb.copy_score.to_numpy() >= NEAR_IDENTICAL
    out["rows"].append({"method": "fmgauge copy detector (trained embedder + verification)",
                        "control": "same-modality (PneumoniaMNIST val)",
                        **_recall(bb.copy_score.to_numpy(), bb.ref_row.to_numpy(), q["tau"], sc, near_b)})
    # the trained embedder alone: each image's best copy-embedder cosine among its candidates, τ from the control
    emb_best = {s: cp[cp.set == s].groupby("row")["copy_embedder_cosine"].max() for s in best}
    emb_ref = cp[cp.set == "benchmark"].sort_values("copy_embedder_cosine", ascending=False).groupby("row")["ref_row"].first()
    c_near = best["copy_control"].copy_score.to_numpy() >= NEAR_IDENTICAL  # in the reference: left out, as in the run
    tau_e = threshold_from_control(emb_best["copy_control"].sort_index().to_numpy()[~c_near], 0)
    out["rows"].append({"method": "trained copy embedder alone (cosine, multi-crop query)",
                        "control": "same-modality (PneumoniaMNIST val)",
                        **_recall(emb_best["benchmark"].sort_index().to_numpy(), emb_ref.sort_index().to_numpy(),
                                  tau_e, sc)})
    # the same shortlist verified without the blur (VerifyConfig(blur=0)): what the blur buys
    from fmgauge.contamination.verify import VerifyConfig, verify_candidates

    vb = {}
    for s_name, spec in (("benchmark", cfg.benchmark), ("copy_control", cfg.copy_control)):
        part = cp[cp.set == s_name]
        width = int(part.candidate.max())
        grid = part.pivot(index="row", columns="candidate", values="ref_row").reindex(columns=range(1, width + 1))
        cands = grid.fillna(-1).astype(np.int64).to_numpy()
        ver = verify_candidates(open_image_set(spec), grid.index.to_numpy(), open_image_set(cfg.reference), cands,
                                VerifyConfig(blur=0.0), chunk=2048, label=f"{s_name} (no blur)", progress=False)
        vb[s_name] = ver.best()
    nb_keep = vb["copy_control"][0] < NEAR_IDENTICAL
    tau_nb = threshold_from_control(vb["copy_control"][0][nb_keep], 0)
    out["rows"].append({"method": "the same, verification without the 0.6 px blur", "control":
                        "same-modality (PneumoniaMNIST val)", **_recall(vb["benchmark"][0], vb["benchmark"][1], tau_nb,
                                                                       sc, vb["benchmark"][0] >= NEAR_IDENTICAL)})
    # dct, τ from either control
    d = DCTEmbedder()
    sets = {n: open_image_set(s) for n, s in (("ref", cfg.reference), ("bench", cfg.benchmark),
                                              ("val", cfg.copy_control), ("ood", cfg.control))}
    e = {n: embed_image_set(s, d, chunk=2048, progress=False).matrix()[1] for n, s in sets.items()}
    top = {n: exact_search(e[n], [e["ref"]], 1) for n in ("bench", "val", "ood")}
    val_keep = top["val"][0][:, 0] < NEAR_IDENTICAL
    for name, ctrl in (("same-modality (PneumoniaMNIST val)", top["val"][0][val_keep, 0]),
                       ("out-of-domain (RetinaMNIST test)", top["ood"][0][:, 0])):
        tau = threshold_from_control(ctrl, 0)
        out["rows"].append({"method": "dct (the previous offline embedder)", "control": name,
                            **_recall(top["bench"][0][:, 0], top["bench"][1][:, 0], tau, sc,
                                      top["bench"][0][:, 0] >= NEAR_IDENTICAL)})
    out["labels_vs_truth"] = _labels_vs_truth(res.run_dir, sc)
    for row in out["rows"]:
        print(row, flush=True)
    pd.DataFrame(out["rows"]).to_csv(RESULTS / "image_overlap_copy_quality.csv", index=False)
    _save("copy_quality", out)
    return out


def _labels_vs_truth(run_dir: Path, sc: dict) -> dict:
    """Automatic labels of the gallery pairs against what is known: planted copy (duplicate) or not."""
    from fmgauge.contamination.gallery import read_pairs

    pairs = read_pairs(run_dir)
    out = {"planted_labelled_duplicate": 0, "planted_in_gallery": 0, "never_labelled_duplicate": 0,
           "never_in_gallery": 0, "never_labels": {}}
    for p in pairs:
        i = int(p["bench_id"].split("/")[1])
        if i < sc["n_plant"] and p["ref_row"] == sc["n_ref"] + i:
            out["planted_in_gallery"] += 1
            out["planted_labelled_duplicate"] += p["auto"] == "duplicate"
        elif i >= sc["n_plant"] and i not in sc["twins"]:
            out["never_in_gallery"] += 1
            out["never_labelled_duplicate"] += p["auto"] == "duplicate"
            out["never_labels"][p["auto"]] = out["never_labels"].get(p["auto"], 0) + 1
    return out


def bench_copy_speed() -> dict:
    import torch
    from PIL import Image

    from fmgauge.contamination.copies import MultiView
    from fmgauge.contamination.copy_embedder import CopyEmbedderConfig, train_copy_embedder
    from fmgauge.contamination.images import open_image_set, to_rgb
    from fmgauge.contamination.neighbours import exact_search
    from fmgauge.contamination.verify import VerifyConfig, grey_stack, verify_pairs

    torch.set_num_threads(1)
    out: dict = {"machine": _machine(), "rows": []}
    imgs = np.concatenate([_load("pneumoniamnist"), _load("retinamnist"), _load("breastmnist")])[:8000]
    pil = [to_rgb(Image.fromarray(a)) for a in imgs]
    with tempfile.TemporaryDirectory() as d:
        os.environ["FMGAUGE_CACHE"] = str(Path(d) / "cache")
        np.savez(Path(d) / "t.npz", train_images=imgs[:2000])
        emb = train_copy_embedder(open_image_set(f"{d}/t.npz:train"), CopyEmbedderConfig(epochs=1), progress=False)
        emb.prepare()
        e, wall, cpu = _cpu_wall(lambda: np.concatenate([emb.embed(pil[i:i + 256]) for i in range(0, len(pil), 256)]))
        out["rows"].append({"what": "embed (64 px, flip-symmetric), 8,000 MedMNIST images in memory", "n": len(pil),
                            "wall_s": wall, "cpu_s": cpu, "per_s_wall": len(pil) / wall, "per_s_cpu": len(pil) / cpu})
        (_, _), wall_s, cpu_s = _cpu_wall(lambda: exact_search(e, (e[i:i + 4096] for i in range(0, len(e), 4096)), 10))
        out["rows"].append({"what": "exact search, 8,000 queries x 8,000 reference (D = 128, k = 10)", "n": len(e),
                            "wall_s": wall_s, "cpu_s": cpu_s, "per_s_wall": len(e) / wall_s, "per_s_cpu": len(e) / cpu_s})
        out["rows"].append({"what": "embed + search, the same 8,000 images end to end", "n": len(e),
                            "wall_s": wall + wall_s, "cpu_s": cpu + cpu_s, "per_s_wall": len(e) / (wall + wall_s),
                            "per_s_cpu": len(e) / (cpu + cpu_s)})
        mv = MultiView(emb, 0.85, 3)
        sub = pil[:500]
        _, wall, cpu = _cpu_wall(lambda: mv.embed(sub))
        out["rows"].append({"what": "query views: 10 per image (whole + 3 x 3 crops), 500 images", "n": len(sub),
                            "wall_s": wall, "cpu_s": cpu, "per_s_wall": len(sub) / wall, "per_s_cpu": len(sub) / cpu})
        a = grey_stack(pil[:2000], 32)
        b = grey_stack(pil[2000:4000], 32)
        _, wall, cpu = _cpu_wall(lambda: verify_pairs(a, b, VerifyConfig()))
        out["rows"].append({"what": "verification, 2,000 candidate pairs at 32 px (162 coarse + 18 refine transforms)",
                            "n": 2000, "wall_s": wall, "cpu_s": cpu, "per_s_wall": 2000 / wall, "per_s_cpu": 2000 / cpu})
    emb_r, search_r, ver = out["rows"][0], out["rows"][1], out["rows"][4]
    proj = []
    for n in (10_000, 100_000, PMC_OA):
        proj.append({"reference": n, "embed_hours_1core": n / emb_r["per_s_cpu"] / 3600,
                     "descriptors_MiB": n * 128 * 4 / 2**20, "ivf_ram_MiB": n * 128 * 4 / 2**20,
                     "exact_ram_MiB": 4096 * 128 * 4 / 2**20,
                     # queries scan all N descriptors once per view: 10 views per query image
                     "exact_search_s_per_1000_query_images": 1000 * 10 * n / (search_r["per_s_cpu"] * 8000)})
    out["projection"] = proj
    out["verify_ms_per_pair_cpu"] = 1000 * ver["cpu_s"] / ver["n"]
    _save("copy_speed", out)
    print(out, flush=True)
    return out


def copy_markdown() -> str:
    t = json.loads((RESULTS / "image_overlap_copy_train.json").read_text())
    sp = json.loads((RESULTS / "image_overlap_copy_speed.json").read_text())
    q = json.loads((RESULTS / "image_overlap_copy_quality.json").read_text())
    sc = q["scenario"]
    fam = " | ".join(FAMILIES)
    lines = ["### Copy detector: recall per family and false flags, next to dct", "",
             f"Benchmark: PneumoniaMNIST test ({sc['n_bench']} images); reference: PneumoniaMNIST train ({sc['n_ref']:,})"
             f" plus a copy of each of benchmark images 0..{sc['n_plant'] - 1} ({sc['per_family']} per family, made "
             "with PIL: crop 80–90 % at a random offset, rotation ±2–5° with black corners, contrast ±10–20 %, JPEG "
             "q40, horizontal flip, exact copy, and 'harder' = crop + rotation + contrast + JPEG together); "
             "same-modality control: PneumoniaMNIST val (524, of which the 8 pixel-identical to train images are "
             "left out of τ); out-of-domain control: RetinaMNIST test (400). α = 0 everywhere. A planted copy counts "
             "as found when its image is flagged *and* its match is its own copy. 'Never-copied' excludes "
             f"benchmark images pixel-identical to a planted one ({len(sc['twins'])}: test image(s) "
             + ", ".join(str(t) for t in sc["twins"]) + " with an identical twin among 0.."
             f"{sc['n_plant'] - 1}, so the reference does hold a copy; column 'twins flagged').", "",
             f"| method | τ from | τ | {fam} | never-copied flagged | twins flagged |",
             "|---|---|---|" + "---|" * len(FAMILIES) + "---|---|"]
    for r in q["rows"]:
        lines.append(f"| {r['method']} | {r['control']} | {r['tau']:.4f} | "
                     + " | ".join(f"{r[f]}/{sc['per_family']}" for f in FAMILIES)
                     + f" | {r['never_flagged']} / {r['never']} | {r['twins_flagged']} / {len(sc['twins'])} |")
    run = q["run"]
    qq = run["questions"]
    lt = q["labels_vs_truth"]
    lines += ["", f"The same run's questions: copies {qq['copies']['benchmark']['k']} / {qq['copies']['benchmark']['n']} "
              f"(Wilson {100 * qq['copies']['benchmark']['lo']:.1f}–{100 * qq['copies']['benchmark']['hi']:.1f} %; "
              f"same-modality control {qq['copies']['control']['k']} / {qq['copies']['control']['n']}); same modality "
              f"/ source overlap {qq['modality']['benchmark']['k']} / {qq['modality']['benchmark']['n']} (out-of-domain "
              f"control {qq['modality']['control']['k']} / {qq['modality']['control']['n']}), which also flags "
              f"{qq['modality']['copy_control_flagged']['k']} of the {qq['modality']['copy_control_flagged']['n']} "
              "same-modality control images (no copies there by construction). Automatic labels of the gallery pairs: "
              f"{run['labels']['counts']}; of the planted copies in the gallery {lt['planted_labelled_duplicate']} / "
              f"{lt['planted_in_gallery']} are labelled duplicate; of the never-copied images in it "
              f"{lt['never_labelled_duplicate']} / {lt['never_in_gallery']} (labels {lt['never_labels']}).",
              "", f"Run (1 torch thread, load average {run['load_avg_1m_at_end']} at the end): {run['wall_s']:.0f} s wall, "
              f"{run['cpu_s']:.0f} s CPU"
              + (" (the trained weights, descriptors and verification scores came from the cache of an identical "
                 "earlier run: the costs are in the next section)" if run["copy_timings"]["train_cpu_s"] < 5 else
                 f"; training {run['copy_timings']['train_s']:.0f} s wall / {run['copy_timings']['train_cpu_s']:.0f} s CPU")
              + f"; the copy embedder trained on {run['training']['trained_on']:,} reference images (6 epochs, final loss "
              f"{run['training']['history'][-1]['loss']:.2f}); pairs verified {run['pairs_verified']}.", "",
              "### Copy detector: cost", "",
              f"Training at the defaults (64 px, width 16, 6 epochs, batch 128) on {t['images']:,} images of 64 × 64 "
              f"(the {t['distinct']:,} MedMNIST images of the three datasets upsampled from 28 px, {t['images'] - t['distinct']:,} "
              f"of them twice): **{t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU** with {t['torch_threads']} torch thread{'s' if t['torch_threads'] > 1 else ''} "
              f"(load average {t['machine']['load_avg_1m_at_start']} at the start, {t['load_avg_1m_at_end']} at the end; "
              f"RSS growth {t['rss_growth_MiB']:.0f} MiB); loss per epoch "
              + ", ".join(f"{h['loss']:.2f}" for h in t["history"]) + ".", "",
              "| step (1 thread) | n | wall s | CPU s | per s (wall) | per s (CPU) |", "|---|---|---|---|---|---|"]
    for r in sp["rows"]:
        lines.append(f"| {r['what']} | {r['n']:,} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['per_s_wall']:.0f} | "
                     f"{r['per_s_cpu']:.0f} |")
    lines += ["", f"Verification: {sp['verify_ms_per_pair_cpu']:.2f} ms CPU per candidate pair.", "",
              "Projected (CPU rates above, one core; D = 128 float32 descriptors):", "",
              "| reference images | embed (hours, 1 core) | descriptors on disk (MiB) | RAM, exact search (MiB) | "
              "RAM, IVF (MiB) | exact search s per 1,000 query images (10 views) |", "|---|---|---|---|---|---|"]
    for p in sp["projection"]:
        lines.append(f"| {p['reference']:,} | {p['embed_hours_1core']:.2f} | {p['descriptors_MiB']:.0f} | "
                     f"{p['exact_ram_MiB']:.0f} | {p['ivf_ram_MiB']:.0f} | {p['exact_search_s_per_1000_query_images']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    part = sys.argv[1] if len(sys.argv) > 1 else "all"
    if part in ("embed", "all"):
        bench_embed()
    if part in ("search", "all"):
        bench_search()
    if part in ("markdown", "all"):
        print(markdown())
    if part == "copy-train":
        bench_copy_train()
    if part == "copy-quality":
        bench_copy_quality()
    if part == "copy-speed":
        bench_copy_speed()
    if part == "copy-markdown":
        print(copy_markdown())
