"""The copy question on real MedMNIST images: planted copies (crop, rotation, contrast, JPEG, flip, exact) found
by the trained copy embedder + verification with τ from a same-modality control; the modality question named as
such; near-identical pairs flagged whatever τ is; automatic labels and their agreement with marks; the pieces
(JPEG, verification geometry, training cache and resume, verification cache) on their own; the gallery in a real
headless browser."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from copy_families import FAMILIES, plant
from fmgauge.contamination.adjudicate import agreement, auto_labels
from fmgauge.contamination.copies import CopyConfig
from fmgauge.contamination.copy_augment import jpeg
from fmgauge.contamination.copy_embedder import CopyEmbedderConfig, train_copy_embedder, training_manifest
from fmgauge.contamination.gallery import read_pairs, serve, set_marks
from fmgauge.contamination.image_overlap import (
    NEAR_IDENTICAL,
    ImageOverlapConfig,
    run_image_overlap,
    write_report,
)
from fmgauge.contamination.images import open_image_set
from fmgauge.contamination.verify import VerifyConfig, align, grey_stack, verify_candidates, verify_pairs
from fmgauge.core.validation import FmgaugeError

MEDMNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist"
N_BENCH, N_REF, PER_FAMILY, N_CONTROL = 150, 400, 10, 300
N_PLANT = PER_FAMILY * len(FAMILIES)
# small and fast for the tests: 32 px input, 8 epochs over the 460 reference images (a few seconds of CPU)
FAST = CopyConfig(embedder=CopyEmbedderConfig(size=32, width=16, epochs=8, batch_size=128), top_k=5)


def _npz(name: str, split: str) -> np.ndarray:
    with np.load(MEDMNIST / f"{name}.npz") as z:
        return z[f"{split}_images"]


def _twins() -> list[int]:
    """Benchmark images 60..149 pixel-identical to one of 0..59 (PneumoniaMNIST test has exact duplicates): the
    reference holds a copy of them too, so they are not 'never copied'."""
    import hashlib

    md5 = [hashlib.md5(a.tobytes()).hexdigest() for a in _npz("pneumoniamnist", "test")[:N_BENCH]]
    return [i for i in range(N_PLANT, N_BENCH) if md5[i] in set(md5[:N_PLANT])]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Benchmark: PneumoniaMNIST test 0..149. Reference: PneumoniaMNIST train 0..399 plus one copy of each of
    benchmark images 0..59 (10 per family). Same-modality control: PneumoniaMNIST val 0..299 (not in the
    reference). Out-of-domain control: RetinaMNIST test."""
    root = tmp_path_factory.mktemp("copies")
    rng = np.random.default_rng(0)
    bench = _npz("pneumoniamnist", "test")[:N_BENCH]
    copies = np.stack([plant(bench[i], FAMILIES[i % len(FAMILIES)], rng) for i in range(N_PLANT)])
    np.savez(root / "sets.npz", bench_images=bench, ref_images=np.concatenate([_npz("pneumoniamnist", "train")[:N_REF],
                                                                              copies]),
             val_images=_npz("pneumoniamnist", "val")[:N_CONTROL])
    return root


def _cfg(root: Path, **over) -> ImageOverlapConfig:
    base = {"benchmark": f"{root / 'sets.npz'}:bench", "reference": f"{root / 'sets.npz'}:ref",
            "control": f"{MEDMNIST / 'retinamnist.npz'}:test", "copy_control": f"{root / 'sets.npz'}:val",
            "top_k": 3, "copies": FAST, "chunk": 512}
    return ImageOverlapConfig(**{**base, **over})


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run_both(planted, module_cache, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_CACHE", str(module_cache))
        return run_image_overlap(_cfg(planted), tmp_path_factory.mktemp("run") / "both", progress=False)


def test_only_a_same_modality_control_answers_the_copy_question_alone(run_both, planted, module_cache, tmp_path,
                                                                      monkeypatch):
    """Without --control there is no modality question; the copy stage's training, descriptors and verification
    come from the cache of the run with both controls (same reference, same shortlist)."""
    monkeypatch.setenv("FMGAUGE_CACHE", str(module_cache))
    res = run_image_overlap(_cfg(planted, control=None), tmp_path / "run", progress=False)
    r = res.results
    assert r["headline"] == "copies" and list(r["questions"]) == ["copies"]
    assert r["questions"]["copies"] == run_both.results["questions"]["copies"]
    assert r["copy_detector"]["timings"]["train_cpu_s"] < 1.0  # cached weights
    assert r["control"]["spec"] == f"{planted / 'sets.npz'}:val" and r["tau"] == r["questions"]["copies"]["tau"]
    assert set(r["labels"]["counts"]) == {"duplicate", "same-source", "different"}
    assert r["labels"]["counts"]["duplicate"] == r["gallery"]["pairs"]  # nothing else is flagged
    assert (tmp_path / "run" / "report.md").read_text().splitlines()[2].startswith("**Copies:")


def test_planted_copies_are_found_per_family_with_no_false_flags(run_both):
    r = run_both.results
    assert r["headline"] == "copies"
    cp = run_both.copies
    best = cp[(cp.set == "benchmark") & cp.best].set_index("row")
    q = r["questions"]["copies"]
    flagged = (best.copy_score > q["tau"]) | (best.copy_score >= NEAR_IDENTICAL)
    found = {f: [] for f in FAMILIES}
    for i in range(N_PLANT):
        found[FAMILIES[i % len(FAMILIES)]].append(bool(flagged.loc[i] and best.loc[i, "ref_row"] == N_REF + i))
    recall = {f: float(np.mean(v)) for f, v in found.items()}
    never = flagged.loc[N_PLANT:].drop(index=_twins(), errors="ignore")  # images with a planted twin have a copy
    print(f"τ_copy {q['tau']:.4f}; recall per family {recall}; never-copied flagged {int(never.sum())} / {len(never)}; "
          f"max never-copied score {best.loc[N_PLANT:, 'copy_score'].max():.4f}")
    assert min(recall.values()) >= 0.9, recall
    assert recall["exact"] == 1.0 and recall["hflip"] == 1.0
    assert int(never.sum()) == 0
    assert q["benchmark"]["k"] == int(flagged.sum()) and q["control"]["k"] == 0
    # the same run's modality question flags nearly everything, copies or not, and most of the same-modality control
    m = r["questions"]["modality"]
    assert m["benchmark"]["k"] > 0.9 * N_BENCH and m["copy_control_flagged"]["value"] > 0.5
    lines = (run_both.run_dir / "report.md").read_text().splitlines()
    assert lines[0].startswith("# Image overlap, copies") and lines[2].startswith("**Copies:")


def test_only_an_out_of_domain_control_says_modality_first(planted, tmp_path, fmgauge_env):
    res = run_image_overlap(_cfg(planted, copy_control=None), tmp_path / "run", progress=False)
    r = res.results
    assert r["headline"] == "modality" and "copies" not in r["questions"] and r["copy_detector"] is None
    first = (tmp_path / "run" / "report.md").read_text().splitlines()[0]
    assert "modality" in first and "not copies" in first, first
    assert r["benchmark"]["flagged"]["k"] == r["questions"]["modality"]["benchmark"]["k"] > 0.9 * N_BENCH
    exact = [i for i in range(N_PLANT) if FAMILIES[i % len(FAMILIES)] == "exact"]
    assert r["benchmark"]["near_identical"] >= len(exact)
    with pytest.raises(FmgaugeError, match="--control and --copy-control are both missing"):
        run_image_overlap(_cfg(planted, control=None, copy_control=None), tmp_path / "run2", progress=False)


def test_near_identical_pairs_are_flagged_whatever_tau_is(planted, tmp_path, fmgauge_env):
    """A control holding images pixel-identical to reference images used to make τ = float32 1.0, and byte-identical
    copies (cosine 0.99999994) then fell below it. Now those control images are left out of τ (with a warning)
    and near-identical benchmark images are flagged whatever τ is."""
    ref = _npz("pneumoniamnist", "train")[:N_REF]
    bench = np.concatenate([ref[:5], _npz("pneumoniamnist", "test")[:20]])  # 5 exact copies
    control = np.concatenate([ref[100:104], _npz("pneumoniamnist", "val")[:60]])  # 4 control images IN the reference
    np.savez(tmp_path / "s.npz", b_images=bench, r_images=ref, c_images=control)
    cfg = ImageOverlapConfig(benchmark=f"{tmp_path / 's.npz'}:b", reference=f"{tmp_path / 's.npz'}:r",
                             control=f"{tmp_path / 's.npz'}:c", copies=CopyConfig(detector="off"))
    res = run_image_overlap(cfg, tmp_path / "run", progress=False)
    m = res.results["questions"]["modality"]
    assert m["control"]["near_identical_left_out"] == 4 and m["control"]["n"] == 60
    assert m["tau"] < NEAR_IDENTICAL
    assert any("left out of τ" in w for w in res.results["warnings"])
    top1 = res.neighbours[(res.neighbours.set == "benchmark") & (res.neighbours["rank"] == 1)].set_index("row")
    assert top1.loc[list(range(5)), "flagged"].all() and m["benchmark"]["near_identical"] == 5
    # and τ = 1 exactly (every control image in the reference but one) still flags the exact copies
    from fmgauge.contamination.image_overlap import _question

    warnings: list[str] = []
    q = _question("copies", np.array([0.99999994, 0.97, 1.0]), np.array([1.0, 0.95]), np.array([False, False]), 0,
                  np.array([0.99999994, 0.97, 1.0]) >= NEAR_IDENTICAL, control=open_image_set(cfg.control),
                  c_rows=np.arange(2), level=0.95, warnings=warnings, what="same-modality")
    assert q["tau"] == 1.0 and q["benchmark"]["k"] == 2 and q["benchmark"]["near_identical"] == 2


def test_every_flagged_pair_gets_an_automatic_label_and_marks_are_compared(run_both):
    r = run_both.results
    pairs = read_pairs(run_both.run_dir)
    assert len(pairs) == r["gallery"]["pairs"] > N_PLANT
    assert all(p["auto"] in ("duplicate", "same-source", "different") for p in pairs)
    by_bench = {p["bench_id"]: p for p in pairs}
    for i in range(N_PLANT):
        p = by_bench[f"bench/{i}"]
        assert p["auto"] == "duplicate" and p["copy_score"] > r["questions"]["copies"]["tau"], p
    assert sum(p["auto"] == "duplicate" for p in pairs) == r["questions"]["copies"]["benchmark"]["k"]
    assert pairs[0]["auto"] == "duplicate" and pairs[-1]["auto"] != "duplicate"  # duplicates first
    others = [p for p in pairs if p["auto"] != "duplicate"]
    assert all(p["copy_score"] is not None and p["aligned_thumb"] for p in pairs[:5])
    # a reviewer agrees on the planted copies and calls 5 lookalikes "different"
    updates = {by_bench[f"bench/{i}"]["pair"]: "duplicate" for i in range(N_PLANT)}
    updates.update({p["pair"]: "different" for p in others[:5]})
    set_marks(run_both.run_dir, updates)
    write_report(run_both.run_dir)
    md = " ".join((run_both.run_dir / "report.md").read_text().split())
    ag = agreement([p["auto"] for p in pairs], [updates.get(p["pair"]) for p in pairs])
    n_diff_agree = sum(p["auto"] == "different" for p in others[:5])
    assert ag["marked"] == N_PLANT + 5 and ag["agree"] == pytest.approx((N_PLANT + n_diff_agree) / (N_PLANT + 5))
    assert f"{N_PLANT + 5} pairs marked by a reviewer so far" in md and "Cohen's κ" in md
    set_marks(run_both.run_dir, dict.fromkeys(updates))  # cleared for the other tests


def test_agreement_known_values():
    auto = ["duplicate"] * 4 + ["same-source"] * 4 + ["different"] * 2
    human = ["duplicate"] * 3 + ["same-source"] + ["same-source"] * 4 + ["different", None]
    ag = agreement(auto, human)
    # 9 marked; 8 agree; marginals auto (4, 4, 1)/9, human (3, 5, 1)/9: p_e = (12 + 20 + 1) / 81
    assert ag["marked"] == 9 and ag["agree"] == pytest.approx(8 / 9)
    pe = 33 / 81
    assert ag["kappa"] == pytest.approx((8 / 9 - pe) / (1 - pe))
    assert agreement(["duplicate"], [None])["kappa"] is None
    lab = auto_labels(np.array([0.999, 0.97, 0.5]), np.array([True, False, False]), 0.9)
    assert lab.tolist() == ["duplicate", "same-source", "different"]


def test_torch_jpeg_matches_libjpeg():
    """The training augmentation's JPEG (8 x 8 DCT + IJG quantiser) reproduces Pillow's libjpeg output within a
    small fraction of the distortion JPEG itself causes."""
    a = _npz("pneumoniamnist", "test")[:30]
    for q in (40, 80):
        ref = []
        for x in a:
            buf = io.BytesIO()
            Image.fromarray(x).save(buf, "JPEG", quality=q)
            ref.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), float))
        ref = np.stack(ref)
        ours = jpeg(torch.from_numpy(a).float()[:, None] / 255, torch.full((len(a),), q)).numpy()[:, 0] * 255
        assert np.abs(ours - ref).mean() < 0.1 * np.abs(ref - a).mean() + 0.05, q


def test_verification_recovers_a_known_transform():
    a = _npz("pneumoniamnist", "test")[3]
    im = Image.fromarray(a).resize((112, 112), Image.BICUBIC)
    # zoom 1.2 on a window off-centre, 6 degrees, mirrored: B = the copy
    c = im.transpose(Image.FLIP_LEFT_RIGHT).rotate(6, resample=Image.BICUBIC).crop((14, 6, 107, 99)).resize((28, 28))
    other = Image.fromarray(_npz("pneumoniamnist", "test")[40])
    g = grey_stack([Image.fromarray(a), Image.fromarray(a), Image.fromarray(a)], 32)
    h = grey_stack([c, Image.fromarray(a), other], 32)
    res = verify_pairs(g, h, VerifyConfig())
    s, p = res.score, res.params
    assert s[0] > 0.98 and p[0, 0] == -1 and abs(abs(p[0, 1]) - 6) <= 1.5 and abs(p[0, 2] - 112 / 93) < 0.08, p[0]
    assert s[1] >= NEAR_IDENTICAL and tuple(p[1, :3]) == (1.0, 0.0, 1.0) and abs(p[1, 3:]).max() < 0.01
    assert s[2] < 0.97
    warped, mask = align(h[0], p[0], size=32)  # the copy brought back into A's frame matches A
    x, y = warped[mask], g[0][mask]
    assert mask.mean() > 0.5 and np.corrcoef(x, y)[0, 1] > 0.97


def test_copy_embedder_is_flip_invariant_and_training_is_cached_and_resumes(planted, tmp_path, fmgauge_env,
                                                                              monkeypatch):
    import fmgauge.contamination.copy_embedder as ce

    ref = open_image_set(f"{planted / 'sets.npz'}:ref")
    cfg = CopyEmbedderConfig(size=32, width=8, epochs=2, batch_size=64, train_images=128)
    real = ce._atomic_save

    def killed_after_epoch_1(obj, path):
        real(obj, path)
        if path.name == "checkpoint.pt" and obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ce, "_atomic_save", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train_copy_embedder(ref, cfg, progress=False)
    monkeypatch.setattr(ce, "_atomic_save", real)
    emb = train_copy_embedder(ref, cfg, progress=False)  # resumes at epoch 2
    hist = training_manifest(emb)["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    again = train_copy_embedder(ref, cfg, progress=False)
    assert again.identity() == emb.identity()
    a = _npz("pneumoniamnist", "test")[:4]
    e = emb.embed([Image.fromarray(x).convert("RGB") for x in a])
    f = emb.embed([Image.fromarray(x[:, ::-1].copy()).convert("RGB") for x in a])
    assert e.shape == (4, cfg.dim) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(e, f, atol=1e-5)


def test_verification_cache_resumes_by_chunk(planted, tmp_path, fmgauge_env, monkeypatch):
    import fmgauge.contamination.verify as vf

    q = open_image_set(f"{planted / 'sets.npz'}:bench")
    r = open_image_set(f"{planted / 'sets.npz'}:ref")
    rows = np.arange(12)
    cands = np.stack([N_REF + rows, rows, np.full(12, -1)], 1)
    calls = []
    real = vf.verify_pairs
    monkeypatch.setattr(vf, "verify_pairs", lambda a, b, cfg: calls.append(len(a)) or real(a, b, cfg))
    first = verify_candidates(q, rows, r, cands, VerifyConfig(), chunk=5, progress=False)
    assert calls == [10, 10, 4] and np.isneginf(first.score[:, 2]).all()
    files = sorted(p for p in (Path(os.environ["FMGAUGE_CACHE"]) / "verify").rglob("*.npz"))
    files[1].unlink()
    calls.clear()
    again = verify_candidates(q, rows, r, cands, VerifyConfig(), chunk=5, progress=False)
    assert sum(calls) in (10, 4) and len(calls) == 1
    np.testing.assert_array_equal(again.score, first.score)
    best, ref_row, _ = again.best()
    assert (ref_row[:N_PLANT // 6] >= 0).all()


# ------------------------------------------------------------------------------------------ headless browser

JS = Path(__file__).parent / "js"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


browser = pytest.mark.skipif(
    shutil.which("node") is None or _chromium() is None or not (JS / "node_modules" / "puppeteer-core").is_dir(),
    reason="needs node, chromium (apt-get install chromium) and puppeteer-core (cd tests/js && npm install)")


@browser
@pytest.mark.parametrize("mode", ["served", "static"])
def test_gallery_in_a_headless_browser(run_both, tmp_path, mode):
    """Paging, filters, sort, keyboard marks, neighbours on demand and the aligned view in real Chromium; marks
    survive a reload (served: RUN/marks.json through the API; static: file:// and localStorage)."""
    run_dir = run_both.run_dir
    pairs = read_pairs(run_dir)
    server = None
    if mode == "served":
        set_marks(run_dir, {p["pair"]: None for p in pairs})
        server = serve(run_dir, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
    else:
        url = (run_dir / "gallery.html").resolve().as_uri()
    try:
        out = subprocess.run(["node", str(JS / "gallery_browser.js"), _chromium(), url, str(tmp_path / "profile")],
                             capture_output=True, text=True, timeout=120)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    n_dup = sum(p["auto"] == "duplicate" for p in pairs)
    assert res["total"] == len(pairs) and res["first_page"] == 25 and res["pages"] == -(-len(pairs) // 25)
    assert res["filtered_duplicate"] == n_dup and res["all_duplicate_labels"]
    assert res["sorted_by_similarity"] and res["page2_first_differs"]
    assert res["neighbours_shown"] >= 1 and res["aligned_images_loaded"] >= 1
    assert res["marked_after_reload"] == {res["keys_marked"][0]: "duplicate", res["keys_marked"][1]: "same-source",
                                          res["keys_marked"][2]: "different"}, res
    assert "unmarked: " + str(len(pairs) - 3) in res["counts_text"]
    assert sorted(res["buttons_on"]) == ["different", "duplicate", "same-source"]  # shown on the reloaded page
    if mode == "served":
        saved = json.loads((run_dir / "marks.json").read_text())["marks"]
        assert {k: v["mark"] for k, v in saved.items()} == res["marked_after_reload"]
        assert "saved to the run" in res["mode_text"]
        set_marks(run_dir, {p: None for p in res["marked_after_reload"]})
    else:
        assert "localStorage" in res["mode_text"]
