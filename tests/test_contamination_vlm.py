"""VLM scoring (answer tokens given image + question) on tiny random-init Qwen2.5-VL and BLIP-2 (OPT, T5) built
from configs, with real MedMNIST images and real SLAKE questions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from fmgauge.contamination import vlm_scoring
from fmgauge.contamination.benchmarks import load_benchmark
from fmgauge.contamination.mink import item_scores
from fmgauge.contamination.tiny import VLM_KINDS, make_tiny_vlm
from fmgauge.contamination.vlm_scoring import BLIP2_PROMPT, VQAItems, resolve_images, vlm_token_stats
from fmgauge.core.validation import FmgaugeError
from fmgauge.core.vlm_models import load_vlm_model, vlm_family

WORDS = ["lung", "liver", "heart", "brain", "kidney", "ct", "mri", "chest", "abdomen", "left", "right", "organ",
         "modality", "image", "abnormal", "normal", "yes", "no", "which", "what", "where", "is", "the", "this", "of"]
CORPUS = [f"Question: {' '.join(np.random.default_rng(i).choice(WORDS, 6))} ? Answer: "
          f"{' '.join(np.random.default_rng(i + 1000).choice(WORDS, 2))}" for i in range(200)]
SIZES = [(28, 28), (56, 56), (28, 56), (56, 28)]  # (w, h): 1, 4, 2, 2 image tokens in the tiny Qwen


def _medmnist_images(folder: Path, n: int, *, offset: int = 0) -> list[Path]:
    """``n`` real PneumoniaMNIST images (28 px, upscaled to a few sizes) saved as PNG; their paths."""
    with np.load(SHARED_DATA / "medmnist" / "pneumoniamnist.npz") as z:
        imgs = z["test_images"][offset: offset + n]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, a in enumerate(imgs):
        p = folder / f"img{offset + i}.png"
        Image.fromarray(a).resize(SIZES[i % len(SIZES)]).save(p)
        out.append(p)
    return out


def _items(folder: Path, n: int, seed: int = 0, offset: int = 0) -> VQAItems:
    rng = np.random.default_rng(seed)
    qs = tuple(f"{' '.join(rng.choice(WORDS, rng.integers(3, 7)))} ?" for _ in range(n))
    ans = tuple(" ".join(rng.choice(WORDS, rng.integers(1, 4))) for _ in range(n))
    return VQAItems(qs, ans, tuple(_medmnist_images(folder, n, offset=offset)))


@pytest.fixture(scope="module", params=VLM_KINDS)
def tiny_vlm(request, tmp_path_factory):
    path = make_tiny_vlm(tmp_path_factory.mktemp(request.param) / "vlm", CORPUS, kind=request.param)
    return load_vlm_model(str(path), device="cpu")


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> VQAItems:
    return _items(tmp_path_factory.mktemp("imgs"), 6)


def _hand_stats(vm, q: str, a: str, image_path: Path) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """The answer-token (ids, logp, mu, sigma) computed directly from the model's logits: the processor encodes
    prompt + answer as one text (T5: the answer as labels), the distributions come from a float64 softmax."""
    proc, tok, model = vm.processor, vm.tokenizer, vm.model
    img = Image.open(image_path).convert("RGB")
    if vm.family == "qwen-vl":
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        enc = proc(text=[prompt + a], images=[img], return_tensors="pt")
        ans = tok(a, add_special_tokens=False)["input_ids"]
    elif not vm.encoder_decoder:
        enc = proc(text=[BLIP2_PROMPT.format(question=q) + " " + a], images=[img], return_tensors="pt")
        ans = tok(" " + a, add_special_tokens=False)["input_ids"]
    else:
        enc = proc(text=[BLIP2_PROMPT.format(question=q)], images=[img], return_tensors="pt")
        ans = tok(a, add_special_tokens=False)["input_ids"]
        enc["labels"] = torch.tensor([ans])
    with torch.no_grad():
        logits = model(**enc).logits[0].double()
    L = logits.shape[0]
    rows = logits[:len(ans)] if vm.encoder_decoder else logits[L - len(ans) - 1: L - 1]
    lp = torch.log_softmax(rows, -1).numpy()
    p = np.exp(lp)
    mu = (p * lp).sum(1)
    sigma = np.sqrt((p * lp ** 2).sum(1) - mu ** 2)
    if not vm.encoder_decoder:
        assert enc["input_ids"][0, L - len(ans):].tolist() == ans  # the answer is the tail of the joint encoding
    return ans, lp[np.arange(len(ans)), ans], mu, sigma


def test_answer_token_stats_equal_a_hand_computation_from_the_logits(tiny_vlm, items):
    st = vlm_token_stats(tiny_vlm, items, cache=False)
    assert len(st) == len(items)
    for i in range(len(items)):
        ans, lp, mu, sd = _hand_stats(tiny_vlm, items.questions[i], items.answers[i], items.images[i])
        s = slice(int(st.offsets[i]), int(st.offsets[i + 1]))
        assert st.token_ids[s].tolist() == ans
        np.testing.assert_allclose(st.logp[s], lp, atol=1e-5)
        np.testing.assert_allclose(st.mu[s], mu, atol=1e-5)
        np.testing.assert_allclose(st.sigma[s], sd, atol=1e-5)
        assert np.all(st.logp[s] < 0) and np.all(st.sigma[s] > 0)


def test_padding_does_not_change_scores(tiny_vlm, items):
    lengths = [len(vlm_scoring._encode(tiny_vlm, q, a, vlm_scoring.load_image(p)).ids)
               for q, a, p in zip(items.questions, items.answers, items.images, strict=True)]
    assert len(set(lengths)) > 1  # items differ in length (image tokens, question), so a batch is padded
    batched = vlm_token_stats(tiny_vlm, items, cache=False, max_batch_tokens=10_000)
    single = vlm_token_stats(tiny_vlm, items, cache=False, batch_size=1)
    assert len(vlm_scoring._batches(lengths, 10_000, None)) == 1
    np.testing.assert_array_equal(batched.offsets, single.offsets)
    for f in ("logp", "mu", "sigma"):
        np.testing.assert_allclose(getattr(batched, f), getattr(single, f), atol=1e-5)


def test_the_image_changes_the_scores_and_the_cache_key(tiny_vlm, items, tmp_path, monkeypatch):
    monkeypatch.setenv("FMGAUGE_CACHE", str(tmp_path / "cache"))
    a = vlm_token_stats(tiny_vlm, items)
    monkeypatch.setattr(vlm_scoring, "forward_answer_stats", lambda *a, **k: pytest.fail("cache miss"))
    np.testing.assert_array_equal(vlm_token_stats(tiny_vlm, items).logp, a.logp)  # served from the cache
    monkeypatch.undo()
    monkeypatch.setenv("FMGAUGE_CACHE", str(tmp_path / "cache"))
    other = _medmnist_images(tmp_path / "other", len(items), offset=50)
    b = vlm_token_stats(tiny_vlm, VQAItems(items.questions, items.answers, tuple(other)))
    assert np.abs(a.logp - b.logp).max() > 1e-4  # other pixels -> other answer log-probs (recomputed)


# --------------------------------------------------------------------------------------- planted effect

def _answer_loss(vm, batch: list) -> torch.Tensor:
    """Mean NLL of the answer tokens of ``batch`` (encoded items), with gradients (tiny decoder-only VLM)."""
    ids, mask = vlm_scoring._pad([e.ids + e.answer for e in batch], vm.tokenizer.pad_token_id)
    kwargs = {"pixel_values": torch.cat([e.vision["pixel_values"] for e in batch]), "input_ids": ids,
              "attention_mask": mask}
    if vm.family == "qwen-vl":
        kwargs["image_grid_thw"] = torch.cat([e.vision["image_grid_thw"] for e in batch])
        kwargs["mm_token_type_ids"] = (ids == vm.model.config.image_token_id).long()
    logits = vm.model(**kwargs).logits
    losses = []
    for b, e in enumerate(batch):
        a = len(e.ids) - 1
        losses.append(torch.nn.functional.cross_entropy(logits[b, a: a + len(e.answer)], torch.tensor(e.answer)))
    return torch.stack(losses).mean()


def test_fine_tuned_items_get_higher_min_k_pp_than_held_out_ones(tmp_path):
    """Plant: fine-tune a tiny BLIP-2 OPT on 12 (image, question, answer) items; Min-K%++ must rank those items
    above 12 held-out items of the same distribution."""
    from fmgauge.core.stats import auc_ci

    vm = load_vlm_model(str(make_tiny_vlm(tmp_path / "vlm", CORPUS, kind="blip2-opt", seed=1)), device="cpu")
    members, held = _items(tmp_path / "m", 12, seed=1), _items(tmp_path / "h", 12, seed=2, offset=12)
    enc = [vlm_scoring._encode(vm, q, a, vlm_scoring.load_image(p))
           for q, a, p in zip(members.questions, members.answers, members.images, strict=True)]
    vm.model.train()
    opt = torch.optim.Adam(vm.model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        opt.zero_grad()
        _answer_loss(vm, enc).backward()
        opt.step()
    vm.model.eval()
    scores = [item_scores(vlm_token_stats(vm, it, cache=False), it.answers, [str(i) for i in range(len(it))])
              for it in (members, held)]
    m, h = scores[0]["minkpp_20"].to_numpy(), scores[1]["minkpp_20"].to_numpy()
    auc = auc_ci(np.r_[np.ones(len(m)), np.zeros(len(h))], np.r_[m, h], n_boot=200, seed=0)
    assert auc.value >= 0.9, (m, h)
    assert scores[0]["loss"].mean() < scores[1]["loss"].mean()


# ------------------------------------------------------------------------------------------ images, names

def test_resolve_images_reads_the_image_root_and_refuses_what_is_missing(tmp_path, fmgauge_env):
    bench = load_benchmark("slake-en", "test", max_items=12)  # 2 distinct images
    assert bench.vqa.images[0] == "xmlab102/source.jpg" and bench.vqa.answers[0] == "CT"
    with pytest.raises(FmgaugeError, match="pass --image-root DIR"):
        resolve_images(bench)
    with pytest.raises(FmgaugeError, match="12 of 12 images of 'slake-en' are missing"):
        resolve_images(bench, tmp_path)
    names = sorted(set(bench.vqa.images))
    for n, src in zip(names, _medmnist_images(tmp_path / "src", len(names)), strict=True):
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        src.rename(tmp_path / n)
    items = resolve_images(bench, tmp_path)
    assert items.n_blank == 0 and items.images[0] == tmp_path / "xmlab102" / "source.jpg"
    (tmp_path / bench.vqa.images[-1]).unlink()
    with pytest.raises(FmgaugeError, match="of 12 images of 'slake-en' are missing"):
        resolve_images(bench, tmp_path)
    blank = resolve_images(bench, tmp_path, blank_missing=True)
    assert 0 < blank.n_blank < 12 and blank.images[0] is not None and blank.images[-1] is None
    assert vlm_scoring.load_image(None).size == (224, 224)
    with pytest.raises(FmgaugeError, match="has no question/answer fields"):
        resolve_images(load_benchmark("glue-mrpc", "dev", max_items=4), tmp_path)


def test_registered_names_fail_offline_in_one_line_naming_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    assert vlm_family("qwen2.5-vl-3b") == "qwen-vl" and vlm_family("blip2-opt-2.7b") == "blip2"
    assert vlm_family("smollm2-135m") is None and vlm_family("Salesforce/blip2-opt-2.7b") == "blip2"
    for name, hub in (("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct"), ("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b")):
        with pytest.raises(FmgaugeError) as e:
            load_vlm_model(name, device="cpu")
        msg = str(e.value)
        assert "\n" not in msg and f"huggingface-cli download {hub} --local-dir DIR" in msg and "--model DIR" in msg


def test_exchangeability_on_a_vlm_runs_on_its_language_model(tmp_path):
    from fmgauge.contamination.exchangeability import ExchangeabilityConfig, exchangeability_test
    from fmgauge.contamination.scoring import token_stats

    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(CORPUS[:8], CORPUS[8:16], strict=True)]
    for kind in ("qwen2.5-vl", "blip2-opt"):
        vm = load_vlm_model(str(make_tiny_vlm(tmp_path / kind, CORPUS, kind=kind)), device="cpu")
        tm = vm.text_model()
        st = token_stats(tm, texts[:2], cache=False)  # context from the VLM's text config
        ids = vm.tokenizer(texts[0])["input_ids"]
        with torch.no_grad():
            logits = tm.model(input_ids=torch.tensor([ids])).logits[0].double()
        hand = torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), ids[1:]].numpy()
        np.testing.assert_allclose(st.item(0)[0], hand, atol=1e-5)
        res = exchangeability_test(tm, texts, ExchangeabilityConfig(shards=2, permutations=3, context=64, stride=32),
                                   cache=False, progress=False)
        assert res.permuted.shape == (2, 3) and np.isfinite(res.canonical).all()
    t5 = load_vlm_model(str(make_tiny_vlm(tmp_path / "t5", CORPUS, kind="blip2-t5")), device="cpu")
    with pytest.raises(FmgaugeError, match="encoder-decoder"):
        t5.text_model()


# ------------------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def slake_with_images(tmp_path_factory):
    """The first 6 English SLAKE test items (real questions and answers) with PneumoniaMNIST images saved under
    SLAKE's own image names in an image root."""
    root = tmp_path_factory.mktemp("slake_imgs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_DATA", str(SHARED_DATA))
        bench = load_benchmark("slake-en", "test", max_items=6)
    names = sorted(set(bench.vqa.images))
    for n, src in zip(names, _medmnist_images(root / ".src", len(names)), strict=True):
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        src.rename(root / n)
    return root


def test_cli_score_topk_and_audit_on_tiny_vlms(tmp_path, slake_with_images, fmgauge_env, capsys):
    from test_bad_inputs import run_cli

    qwen = make_tiny_vlm(tmp_path / "qwen", CORPUS, kind="qwen2.5-vl")
    blip = make_tiny_vlm(tmp_path / "blip", CORPUS, kind="blip2-opt")
    out = tmp_path / "scores.csv"
    code, err = run_cli(["contamination", "score", "--model", str(qwen), "--benchmark", "slake-en", "--max-items",
                         "6", "--image-root", str(slake_with_images), "--device", "cpu", "--out", str(out)], capsys)
    assert code == 0, err
    df = pd.read_csv(out)
    answers = load_benchmark("slake-en", "test", max_items=6).vqa.answers
    vm = load_vlm_model(str(qwen), device="cpu")
    assert len(df) == 6 and df.n_tokens.tolist() == [len(vm.tokenizer(a, add_special_tokens=False)["input_ids"])
                                                      for a in answers]
    assert np.isfinite(df.minkpp_20).all()

    (tmp_path / "empty").mkdir()
    code, err = run_cli(["contamination", "score", "--model", str(blip), "--benchmark", "slake-en", "--max-items",
                         "6", "--image-root", str(tmp_path / "empty"), "--blank-images", "--device", "cpu",
                         "--out", str(tmp_path / "blank.csv")], capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "blank.csv")) == 6
    from fmgauge.contamination.detect import score

    res = score(str(blip), "slake-en", max_items=6, image_root=tmp_path / "empty", blank_images=True, device="cpu",
                progress=False)  # served from the cache the CLI run filled
    assert res.meta["n_blank_images"] == 6 and res.meta["scored"].startswith("answer tokens given image")

    code, err = run_cli(["contamination", "topk", "--models", f"{qwen},{blip}", "--benchmark", "slake-en",
                         "--max-items", "6", "--image-root", str(slake_with_images), "--device", "cpu"], capsys)
    assert code == 0, err

    # audit: the tiny Qwen audited, the tiny BLIP-2 as the baseline, a csv cohort with its own images
    cohort = _items(tmp_path / "cohort", 24, seed=5, offset=100)
    pd.DataFrame({"question": cohort.questions, "answer": cohort.answers,
                  "image": [p.name for p in cohort.images]}).to_csv(tmp_path / "cohort" / "c.csv", index=False)
    cfg = {"name": "vlm", "models": [str(qwen)], "baseline": str(blip), "benchmark": "slake-en", "max_items": 6,
           "cohort": f"csv:{tmp_path / 'cohort' / 'c.csv'}", "cohort_split": "all", "image_root": str(slake_with_images),
           "detectors": ["loss", "minkpp", "exchangeability"], "device": "cpu",
           "exchangeability": {"shards": 2, "permutations": 3, "context": 64, "stride": 32}}
    # SLAKE's first 6 items are the questions about one image: one block, nothing to permute — refused up front
    (tmp_path / "a.yaml").write_text(json.dumps(cfg))
    code, err = run_cli(["contamination", "audit", "--config", str(tmp_path / "a.yaml"), "--out",
                         str(tmp_path / "run")], capsys)
    assert code == 2 and "the benchmark's first 6 items form 1. Use fewer shards" in " ".join(err.split()), err
    cfg["group_by"] = "none"  # the plumbing under test: score items one by one
    (tmp_path / "a.yaml").write_text(json.dumps(cfg))
    code, err = run_cli(["contamination", "audit", "--config", str(tmp_path / "a.yaml"), "--out",
                         str(tmp_path / "run")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    dets = {(t["model"], t["detector"]) for t in summary["tests"]}
    assert {(str(qwen), "minkpp"), (str(blip), "minkpp"), (str(qwen), "exchangeability")} <= dets
