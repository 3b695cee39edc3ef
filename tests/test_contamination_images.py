"""Image-side overlap on real MedMNIST images: planted augmented copies found by the offline embedder, τ from a
control, Wilson intervals, approximate-search recall, unreadable files, the resumable cache, gallery marks."""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from conftest import SHARED_DATA
from fmgauge.contamination.embed_cache import embed_image_set
from fmgauge.contamination.embedders import DCTEmbedder, make_embedder
from fmgauge.contamination.gallery import import_marks, load_marks, mark_counts, read_pairs, serve
from fmgauge.contamination.image_overlap import ImageOverlapConfig, run_image_overlap, write_report
from fmgauge.contamination.images import open_image_set, to_rgb
from fmgauge.contamination.neighbours import IndexConfig, build_index, exact_search, recall_against_exact
from fmgauge.contamination.overlap import flagged_fraction, flags, threshold_from_control
from fmgauge.core.stats import wilson_ci
from fmgauge.core.validation import FmgaugeError

MEDMNIST = SHARED_DATA / "medmnist"
KINDS = ("crop", "resize", "jpeg", "brightness", "rotation")
N_BENCH, N_REF, N_PLANT = 200, 1000, 30


def _npz(name: str, split: str) -> np.ndarray:
    with np.load(MEDMNIST / f"{name}.npz") as z:
        return z[f"{split}_images"]


def augment(a: np.ndarray, kind: str) -> Image.Image:
    """A near-duplicate of the (H, W) uint8 image ``a``: 4 % crop per side, 3x upscale, JPEG q40, +25 %
    brightness or a 3° rotation."""
    im = Image.fromarray(a)
    w, h = im.size
    if kind == "crop":
        c = max(1, round(0.04 * w))
        return im.crop((c, c, w - c, h - c)).resize((w, h), Image.BILINEAR)
    if kind == "resize":
        return im.resize((3 * w, 3 * h), Image.BICUBIC)
    if kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=40)
        return Image.open(io.BytesIO(buf.getvalue()))
    if kind == "brightness":
        return ImageEnhance.Brightness(im).enhance(1.25)
    return im.rotate(3, resample=Image.BILINEAR, fillcolor=int(np.median(a)))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Benchmark: 200 PneumoniaMNIST test images (a folder of PNGs). Reference: 1000 PneumoniaMNIST train images
    plus augmented copies of benchmark images 0..29 (a CSV listing with source ids). Control: RetinaMNIST test
    0..199 (npz written to disk). Held-out out-of-domain images: RetinaMNIST test 200..399, BreastMNIST test."""
    root = tmp_path_factory.mktemp("planted")
    bench = _npz("pneumoniamnist", "test")[:N_BENCH]
    (root / "bench").mkdir()
    for i, a in enumerate(bench):
        Image.fromarray(a).save(root / "bench" / f"b{i:03d}.png")
    (root / "ref").mkdir()
    rows = []
    for i, a in enumerate(_npz("pneumoniamnist", "train")[:N_REF]):
        Image.fromarray(a).save(root / "ref" / f"r{i:04d}.png")
        rows.append({"path": f"ref/r{i:04d}.png", "source_id": f"train-{i}"})
    for i in range(N_PLANT):
        kind = KINDS[i % len(KINDS)]
        ext = "jpg" if kind == "jpeg" else "png"
        augment(bench[i], kind).save(root / "ref" / f"plant{i:02d}.{ext}", quality=95)
        rows.append({"path": f"ref/plant{i:02d}.{ext}", "source_id": f"planted-b{i:03d}-{kind}"})
    pd.DataFrame(rows).to_csv(root / "reference.csv", index=False)
    retina = _npz("retinamnist", "test")
    np.savez(root / "control.npz", test_images=retina[:200], heldout_images=retina[200:])
    return root


@pytest.fixture(scope="module")
def run(planted, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        cfg = ImageOverlapConfig(benchmark=str(planted / "bench"), reference=str(planted / "reference.csv"),
                                 control=f"{planted / 'control.npz'}:test", embedder="dct", chunk=256)
        return run_image_overlap(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)


def test_planted_copies_are_recovered_and_the_control_is_not_flagged(run):
    nb = run.neighbours
    top1 = nb[(nb.set == "benchmark") & (nb["rank"] == 1)].set_index("id")
    found = {k: [] for k in KINDS}
    for i in range(N_PLANT):
        r = top1.loc[f"b{i:03d}.png"]
        found[KINDS[i % len(KINDS)]].append(bool(r.flagged and r.ref_id.startswith("ref/plant")
                                                 and r.ref_source.startswith(f"planted-b{i:03d}")))
    recall = np.mean([v for vs in found.values() for v in vs])
    per_kind = {k: float(np.mean(v)) for k, v in found.items()}
    print(f"planted-copy recall {recall:.3f}; per kind {per_kind}; tau {run.tau:.4f}")
    assert recall >= 0.9, per_kind  # measured 1.0 (30 / 30) with the default dct embedder
    assert min(per_kind.values()) >= 0.8, per_kind
    assert run.control_flags == 0
    r = run.results
    assert r["benchmark"]["embedded"] == N_BENCH and r["reference"]["embedded"] == N_REF + N_PLANT
    k, n = r["benchmark"]["flagged"]["k"], r["benchmark"]["flagged"]["n"]
    ci = wilson_ci(k, n)
    assert (r["benchmark"]["flagged"]["lo"], r["benchmark"]["flagged"]["hi"]) == pytest.approx((ci.lo, ci.hi))
    for f in ("results.json", "neighbours.csv", "neighbours.parquet", "skipped.csv", "report.html", "report.md",
              "gallery.html", "figures/similarity_hist.png"):
        assert (run.run_dir / f).is_file(), f


def test_heldout_out_of_domain_images_stay_below_tau(run, planted):
    """τ set on RetinaMNIST test 0..199: an unseen image exchangeable with the control clears τ with probability
    <= (α + 1) / (N_c + 1) = 1/201, so ~1 of 200 more RetinaMNIST images may (allow 3); BreastMNIST none."""
    emb = DCTEmbedder()
    ref = open_image_set(str(planted / "reference.csv"))
    _, refs, _ = ref.read(0, len(ref))
    r = emb.embed(refs)
    for name, imgs, allowed in (("retina held-out", np.load(planted / "control.npz")["heldout_images"], 3),
                                ("breast", _npz("breastmnist", "test"), 0)):
        e = emb.embed([to_rgb(Image.fromarray(a)) for a in imgs])
        top1 = (e @ r.T).max(1)
        assert (top1 > run.tau).sum() <= allowed, (name, float(top1.max()), run.tau)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=60),
       st.integers(0, 59), st.booleans())
def test_tau_flags_at_most_alpha_control_images(sims, alpha, ties):
    s = np.asarray(sims + sims[: len(sims) // 2] if ties else sims)  # ties: repeated values
    alpha = alpha % len(s)
    tau = threshold_from_control(s, alpha)
    assert flags(s, tau).sum() <= alpha
    assert (s >= tau).sum() >= alpha + 1  # and τ is no higher than needed: it is one of the control values


def test_tau_refuses_bad_alpha_and_empty_control():
    with pytest.raises(FmgaugeError, match="0..2"):
        threshold_from_control(np.array([0.1, 0.2, 0.3]), 3)
    with pytest.raises(FmgaugeError, match="no embedded images"):
        threshold_from_control(np.array([]), 0)


def test_wilson_interval_known_value():
    """5 of 20 at 95 %: Wilson (1927) score interval 0.1119 .. 0.4687 (Newcombe 1998, table I method 3)."""
    est = flagged_fraction(np.array([True] * 5 + [False] * 15))
    assert est.value == 0.25
    assert (est.lo, est.hi) == pytest.approx((0.1119, 0.4687), abs=1e-4)
    zero = flagged_fraction(np.zeros(2000, bool))  # the paper's 0 / 2,000 control
    assert zero.lo == 0.0 and zero.hi == pytest.approx(0.001917, abs=1e-5)


@pytest.fixture(scope="module")
def medmnist_vectors():
    """DCT embeddings of 6,334 real images (three modalities) as the reference; 600 queries: 300 near-duplicate
    copies of reference images and 300 unseen test images."""
    emb = DCTEmbedder()
    ims = [*_npz("pneumoniamnist", "train"), *_npz("retinamnist", "train"), *_npz("breastmnist", "train")]
    ref = emb.embed([to_rgb(Image.fromarray(a)) for a in ims])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ims), 300, replace=False)
    dup = emb.embed([to_rgb(augment(ims[i] if ims[i].ndim == 2 else ims[i][..., 0], KINDS[j % 5]))
                     for j, i in enumerate(pick)])
    unseen = emb.embed([to_rgb(Image.fromarray(a)) for a in _npz("pneumoniamnist", "test")[:300]])
    return ref, np.vstack([dup, unseen])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_search_recall_at_default_settings(medmnist_vectors, kind):
    ref, q = medmnist_vectors
    chunks = lambda: (ref[i:i + 1000] for i in range(0, len(ref), 1000))  # noqa: E731
    index = build_index(chunks, len(ref), ref.shape[1], IndexConfig(kind=kind))
    rep = recall_against_exact(index, q, 5)
    print(kind, index.params, rep)
    assert rep.queries == len(q) and rep.recall_at_1 >= 0.95 and rep.recall_at_k >= 0.9


def test_exact_search_streams_chunks_like_brute_force(medmnist_vectors):
    ref, q = medmnist_vectors
    s, i = exact_search(q, (ref[j:j + 777] for j in range(0, len(ref), 777)), 3)
    full = q @ ref.T
    np.testing.assert_allclose(full[np.arange(len(q)), i[:, 0]], full.max(1), atol=1e-6)  # ties may swap ids
    assert (i[:, 0] == full.argmax(1)).mean() > 0.99
    np.testing.assert_allclose(s, -np.sort(-full, axis=1)[:, :3], atol=1e-6)
    assert (np.diff(s, axis=1) <= 0).all()


def test_auto_index_switches_at_the_threshold():
    from fmgauge.contamination.neighbours import resolve_kind

    assert resolve_kind(IndexConfig(exact_below=100), 99) == "exact"
    assert resolve_kind(IndexConfig(exact_below=100), 100) == "ivf"


def test_dct_embedding_invariances_and_modes(planted):
    emb = DCTEmbedder()
    a = _npz("pneumoniamnist", "test")[0]
    base = emb.embed([to_rgb(Image.fromarray(a))])
    assert base.shape == (1, 63) and base.dtype == np.float32
    assert np.linalg.norm(base) == pytest.approx(1.0, abs=1e-6)
    contrast = (a.astype(float) * 0.5 + 40).round().astype(np.uint8)  # affine change, no clipping
    assert (emb.embed([to_rgb(Image.fromarray(contrast))]) @ base.T)[0, 0] > 0.995
    # the same picture as L, RGB, RGBA (opaque), 16-bit and enlarged RGB: one embedding
    rgba = Image.fromarray(np.dstack([a, a, a, np.full_like(a, 255)]))
    i16 = Image.fromarray(a.astype(np.uint16) * 257)
    assert i16.mode.startswith("I")
    variants = [Image.fromarray(a), Image.fromarray(a).convert("RGB"), rgba, i16,
                Image.fromarray(a).resize((112, 112), Image.BICUBIC).convert("RGB")]
    e = emb.embed([to_rgb(v) for v in variants])
    assert (e @ base.T).min() > 0.99
    assert not emb.embed([to_rgb(Image.new("L", (28, 28), 77))]).any()  # constant image: zero row


def _broken_folder(root: Path) -> Path:
    d = root / "mixed"
    d.mkdir()
    imgs = _npz("pneumoniamnist", "val")[:6]
    Image.fromarray(imgs[0]).save(d / "a_gray.png")
    Image.fromarray(imgs[1]).convert("RGB").resize((64, 64)).save(d / "b_rgb64.jpg")
    Image.fromarray(np.dstack([imgs[2]] * 3 + [np.full_like(imgs[2], 200)])).save(d / "c_rgba.png")
    Image.fromarray(imgs[3].astype(np.uint16) * 100).save(d / "d_16bit.tif")
    (d / "sub").mkdir()
    Image.fromarray(imgs[4]).save(d / "sub" / "e_nested.bmp")
    buf = io.BytesIO()
    Image.fromarray(imgs[5]).resize((200, 200)).save(buf, "PNG")
    (d / "f_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "g_not_an_image.jpg").write_text("this is text")
    (d / "h_empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_unreadable_files_are_skipped_and_listed(tmp_path, fmgauge_env):
    s = open_image_set(str(_broken_folder(tmp_path)))
    assert len(s) == 8 and "sub/e_nested.bmp" in set(s.ids)
    e = embed_image_set(s, DCTEmbedder(), batch_size=3, chunk=4, progress=False)
    rows, x = e.matrix()
    skipped = {k.id: k.reason for k in e.skipped()}
    assert set(skipped) == {"f_truncated.png", "g_not_an_image.jpg", "h_empty.png"}, skipped
    assert all(skipped.values())
    assert len(rows) == 5 and x.shape == (5, 63)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_run_with_unreadable_files_completes_and_lists_them(tmp_path, fmgauge_env, planted):
    d = _broken_folder(tmp_path)
    cfg = ImageOverlapConfig(benchmark=str(d), reference=str(planted / "reference.csv"),
                             control=str(planted / "bench"), embedder="dct")
    res = run_image_overlap(cfg, tmp_path / "run", progress=False)
    sk = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert sorted(sk.id) == ["f_truncated.png", "g_not_an_image.jpg", "h_empty.png"]
    assert res.results["benchmark"]["skipped"] == 3 and res.results["benchmark"]["embedded"] == 5
    assert any("could not be read" in w for w in res.results["warnings"])
    assert any("larger than the benchmark" in w for w in res.results["warnings"])  # control 200 > benchmark 5


def test_empty_or_unreadable_reference_is_refused(tmp_path, fmgauge_env, planted):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FmgaugeError, match="holds no image files"):
        open_image_set(str(tmp_path / "empty"), option="--reference")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG broken")
    cfg = ImageOverlapConfig(benchmark=str(planted / "bench"), reference=str(tmp_path / "bad"),
                             control=f"{planted / 'control.npz'}:test")
    with pytest.raises(FmgaugeError, match="empty reference set"):
        run_image_overlap(cfg, tmp_path / "run", progress=False)
    pd.DataFrame({"path": []}).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(FmgaugeError, match="holds no images"):
        open_image_set(str(tmp_path / "none.csv"), option="--reference")


def test_cache_resumes_an_interrupted_embedding(tmp_path, fmgauge_env, planted):
    class Counting(DCTEmbedder):
        calls = 0

        def embed(self, images):
            Counting.calls += len(images)
            return super().embed(images)

    s = open_image_set(str(planted / "bench"))
    first = embed_image_set(s, Counting(), chunk=64, progress=False)
    assert Counting.calls == N_BENCH and first.n_chunks == 4
    _, x0 = first.matrix()
    first.chunk_path(2).unlink()  # as if killed while writing chunk 2
    Counting.calls = 0
    again = embed_image_set(s, Counting(), chunk=64, progress=False)
    assert again.root == first.root and Counting.calls == 64
    np.testing.assert_array_equal(again.matrix()[1], x0)


def test_pmc_oa_layout_carries_captions_and_pmcids(tmp_path, fmgauge_env, planted):
    (tmp_path / "pmc" / "images").mkdir(parents=True)
    rows = []
    for i, a in enumerate(_npz("pneumoniamnist", "train")[:40]):
        Image.fromarray(a).save(tmp_path / "pmc" / "images" / f"PMC{i}_F1.jpg", quality=95)
        rows.append({"image": f"PMC{i}_F1.jpg", "caption": f"Chest radiograph {i}.", "pmcid": f"PMC{1000 + i}"})
    (tmp_path / "pmc" / "pmc_oa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = open_image_set(str(tmp_path / "pmc" / "pmc_oa.jsonl"))
    assert s.kind == "pmc-oa" and s.captions[3] == "Chest radiograph 3." and s.source_ids[3] == "PMC1003"
    bench = tmp_path / "b"
    bench.mkdir()
    for i in (3, 7):
        augment(_npz("pneumoniamnist", "train")[i], "jpeg").save(bench / f"copy{i}.png")
    cfg = ImageOverlapConfig(benchmark=str(bench), reference=f"pmc-oa:{tmp_path / 'pmc' / 'pmc_oa.jsonl'}",
                             control=f"{planted / 'control.npz'}:test", top_k=3)
    res = run_image_overlap(cfg, tmp_path / "run", progress=False)
    top1 = res.neighbours[(res.neighbours.set == "benchmark") & (res.neighbours["rank"] == 1)].set_index("id")
    assert top1.loc["copy3.png", "ref_source"] == "PMC1003" and top1.loc["copy7.png", "ref_source"] == "PMC1007"
    assert "Chest radiograph 7." in (tmp_path / "run" / "gallery.html").read_text()


def test_npz_splits_and_bad_specs(tmp_path):
    s = open_image_set(str(MEDMNIST / "breastmnist.npz"))
    assert len(s) == 546 + 78 + 156 and s.ids[0] == "train/0" and s.ids[-1] == "test/155"
    t = open_image_set(f"{MEDMNIST / 'retinamnist.npz'}:val")
    assert len(t) == 120 and t.load(0).mode == "RGB"
    with pytest.raises(FmgaugeError, match="has no split 'dev'"):
        open_image_set(f"{MEDMNIST / 'retinamnist.npz'}:dev")
    pd.DataFrame({"file": ["a.png"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(FmgaugeError, match="has no 'path' column; it has \\['file'\\]"):
        open_image_set(str(tmp_path / "l.csv"))
    pd.DataFrame({"path": ["nowhere/a.png"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(FmgaugeError, match="none of its first 1 images exist"):
        open_image_set(str(tmp_path / "m.csv"))


def test_gallery_marks_survive_a_reload(run, tmp_path):
    run_dir = run.run_dir
    pairs = [p["pair"] for p in read_pairs(run_dir)]
    assert len(pairs) == run.results["gallery"]["pairs"] > 0
    server = serve(run_dir, port=0, on_change=write_report)  # the report re-renders after each mark
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        def post(body: dict) -> tuple[int, dict]:
            req = urllib.request.Request(f"{base}/api/marks", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "X-Fmgauge-Token": server.token}, method="POST")
            try:
                with urllib.request.urlopen(req) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert post({"pair": pairs[0], "mark": "duplicate"})[0] == 200
        assert post({"pair": pairs[1], "mark": "same-source"})[0] == 200
        assert post({"pair": pairs[2], "mark": "different"})[0] == 200
        assert post({"pair": pairs[2], "mark": None})[0] == 200  # cleared again
        code, err = post({"pair": pairs[3], "mark": "maybe"})
        assert code == 400 and "must be one of" in err["error"]
        assert post({"pair": "nope|nope", "mark": "duplicate"})[0] == 400
        with urllib.request.urlopen(f"{base}/") as r:  # the page itself
            assert b"api/marks" in r.read()
        with urllib.request.urlopen(f"{base}/api/marks") as r:  # what a reloaded page GETs
            got = json.loads(r.read())
        import http.client

        (run_dir.parent / "secret.txt").write_text("outside the run")
        for path, status in (("/results.json", 200), ("/../secret.txt", 404)):  # nothing outside the run dir
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
            conn.request("GET", path)
            assert conn.getresponse().status == status, path
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert {k: v["mark"] for k, v in got["marks"].items()} == {pairs[0]: "duplicate", pairs[1]: "same-source"}
    assert {k: v["mark"] for k, v in load_marks(run_dir).items()} == {pairs[0]: "duplicate", pairs[1]: "same-source"}
    counts = mark_counts(run_dir)
    assert counts == {"duplicate": 1, "same-source": 1, "different": 0, "unmarked": len(pairs) - 2}
    assert f"| 1 | 1 | 0 | {len(pairs) - 2} |" in " ".join((run_dir / "report.md").read_text().split())
    # marks downloaded from the static page (localStorage form) merge into the run
    (tmp_path / "dl.json").write_text(json.dumps({"marks": {pairs[2]: {"mark": "different", "at": "x"}}}))
    import_marks(run_dir, tmp_path / "dl.json")
    assert mark_counts(run_dir)["different"] == 1 and mark_counts(run_dir)["duplicate"] == 1
    (tmp_path / "bad.json").write_text(json.dumps({pairs[0]: "dup"}))
    with pytest.raises(FmgaugeError, match="must be one of"):
        import_marks(run_dir, tmp_path / "bad.json")


def test_unknown_embedder_suggests_near_names():
    with pytest.raises(FmgaugeError, match="Did you mean 'siglip-b16'"):
        make_embedder("siglip-b61")


def _md5s(a: np.ndarray) -> list[str]:
    import hashlib

    return [hashlib.md5(x.tobytes()).hexdigest() for x in a]


def test_known_cross_split_duplicates_in_medmnist_are_found(tmp_path, fmgauge_env):
    """PneumoniaMNIST's val split holds 8 images pixel-identical to train images (md5): the run counts exactly those
    as near-identical and puts them at the top of the gallery; used as a control, those 8 are named and left out
    of τ (they are in the reference), so they no longer inflate it to 1."""
    with np.load(MEDMNIST / "pneumoniamnist.npz") as z:
        train = set(_md5s(z["train_images"]))
        dup_val = {f"val/{i}" for i, h in enumerate(_md5s(z["val_images"])) if h in train}
    assert len(dup_val) == 8
    cfg = ImageOverlapConfig(benchmark=f"{MEDMNIST / 'pneumoniamnist.npz'}:val",
                             reference=f"{MEDMNIST / 'pneumoniamnist.npz'}:train",
                             control=f"{MEDMNIST / 'breastmnist.npz'}:test", gallery_max=20)
    res = run_image_overlap(cfg, tmp_path / "run", progress=False)
    assert res.results["benchmark"]["near_identical"] == 8
    top8 = {p["bench_id"] for p in read_pairs(tmp_path / "run")[:8]}
    assert top8 == dup_val
    swapped = cfg.model_copy(update={"control": f"{MEDMNIST / 'pneumoniamnist.npz'}:val"})
    res2 = run_image_overlap(swapped, tmp_path / "run2", progress=False)
    m = res2.results["questions"]["modality"]
    assert m["control"]["near_identical_left_out"] == 8 and m["control"]["n"] == 524 - 8
    assert res2.results["control"]["near_identical"] == 8 and res2.tau < 0.999  # left out of τ, not inflating it
    assert any("8 out-of-domain control image(s) are near-identical to reference images" in w and "left out of τ" in w
               for w in res2.results["warnings"])
