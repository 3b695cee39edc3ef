"""Zero-shot text labeler by sentence-embedding similarity to class descriptions (minilm-l6 by default).

Notation: N texts, M scored classes (the dataset's K, or more with one-vs-rest ``rest_classes``, see
:mod:`.text`), J_m descriptions of class m, D embedding width. With e(·) the unit-length mean-pooled sentence
embedding of :func:`fmgauge.weaklabels.text_embed.embed_texts`:

    c_m = normalise( mean_j e(description_mj) )           (M, D)   description ensembling
    s_im = e(text_i) · c_m                                (N, M)   cosine similarity
    p(m | text_i) = softmax_m( s_im / temperature )       (N, M)   then summed within each dataset class -> (N, K)

This is zero-shot classification by embedding similarity as in CLIP (Radford et al. 2021, §3.1.4), applied to a
text-only sentence encoder. Default temperature 0.05: all-MiniLM-L6-v2 was trained with sentence-transformers'
MultipleNegativesRankingLoss at scale 20, i.e. a softmax over cosine similarities / 0.05, so that is the
temperature its similarities are calibrated for.

Descriptions, first match wins (the config's explicit fields > the dataset's meta > neutral defaults):

1. ``class_descriptions`` in the config (one list per dataset class) replaces everything below;
2. ``templates`` or ``class_names`` in the config: every scored class is described by the templates (the
   config's, else the dataset's, else :data:`DEFAULT_TEMPLATES`) filled with its name;
3. otherwise a scored class (a dataset class, or a rest class of a one-vs-rest task) named in
   ``dataset.meta["class_descriptions"]`` (a label-description file, :mod:`fmgauge.core.datasets_text`) gets
   those descriptions, and every other class the templates ``dataset.meta["label_templates"]``, else the neutral
   :data:`DEFAULT_TEMPLATES` ("a text about {c}.", "{c}").

A "not X" class without rest classes (fallback) is described by ``negative_descriptions`` (config, else
``dataset.meta["negative_descriptions"]``, else the neutral :data:`DEFAULT_NEGATIVE`): generic descriptions of
the domain ("a medical abstract." for Medical Abstracts, "a text." by default), so a text is called X only when it
is closer to X's descriptions than to a generic one. Negated descriptions ("an abstract not about X") are not used:
sentence encoders embed them next to X. Prefer rest classes: on a corpus where the generic description is no
closer to the other classes' texts than to X's, the fallback calls most texts X.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from fmgauge.core.data import Dataset
from fmgauge.core.models import DeviceName
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.labelers.base import LABELERS, LabelerBase, LabelerKind, LabelerOutput, check_template
from fmgauge.weaklabels.labelers.text import first_set, negated, pool_classes, scored_classes, split_texts
from fmgauge.weaklabels.text_embed import embed_texts

log = logging.getLogger(__name__)
DEFAULT_TEMPLATES = ("a text about {c}.", "{c}")  # neutral: any corpus (Medical Abstracts brings its own in meta)
DEFAULT_NEGATIVE = ("a text.", "a document.", "text")


class TextEmbeddingLabeler(LabelerBase):
    kind: Literal["text-embedding"] = "text-embedding"
    model: str = Field("minilm-l6", description="sentence encoder: registered name (minilm-l6), local "
                       "directory or hub id, loaded by core.text_models.load_text_model(task='encoder')")
    templates: list[str] | None = Field(None, description="description templates containing '{c}', filled with "
                                        "each class name; the class embedding is the normalised mean over them "
                                        "(description ensembling). Given here, they describe every class; None = "
                                        "the dataset's class descriptions and templates (meta), else "
                                        "DEFAULT_TEMPLATES")
    class_names: list[str] | None = Field(None, description="names put into the templates, one per dataset "
                                          "class in class order, instead of the dataset's class names (the "
                                          "dataset's class descriptions are then not used)")
    class_descriptions: list[list[str]] | None = Field(
        None, description="explicit descriptions, one non-empty list per dataset class in class order; replaces "
        "templates, class_names, rest_classes and negative_descriptions")
    rest_classes: list[str] | None = Field(
        None, description="one-vs-rest datasets ('not X', 'X'): the classes that make up 'not X', each described "
        "by the templates (X itself may be listed too); P(not X) = sum of their probabilities. None: "
        "dataset.meta['rest_class_names'] if present, else negative_descriptions")
    negative_descriptions: list[str] | None = Field(
        None, description="fallback descriptions of a 'not X' class when no rest classes are known: generic "
        "descriptions of the domain; None = dataset.meta['negative_descriptions'], else DEFAULT_NEGATIVE")
    temperature: float = Field(0.05, gt=0.0, description="softmax temperature over cosine similarities "
                               "(0.05 = the scale 20 all-MiniLM-L6-v2 was trained with)")
    max_length: int = Field(256, ge=2, description="tokens per text (special tokens included); longer texts "
                            "are truncated (256 = all-MiniLM-L6-v2's max_seq_length)")
    batch_size: int = Field(64, ge=1, description="texts per forward pass")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|cuda:N|mps")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field("float32", description="model dtype")

    @field_validator("templates")
    @classmethod
    def _check_templates(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise FmgaugeError("templates must hold at least one template such as 'a text about {c}.' (or be "
                               "unset: null).")
        return v if v is None else [check_template(t) for t in v]

    @field_validator("class_descriptions")
    @classmethod
    def _check_descriptions(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        if v is not None and any(not d or any(not isinstance(s, str) or not s.strip() for s in d) for d in v):
            raise FmgaugeError("class_descriptions must hold one non-empty list of non-empty strings per class.")
        return v

    @field_validator("negative_descriptions")
    @classmethod
    def _check_negative(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not s.strip() for s in v)):
            raise FmgaugeError("negative_descriptions must hold at least one non-empty description.")
        return v


    def describe(self) -> str:
        return f"text-embedding:{self.model}"


def class_descriptions(cfg: TextEmbeddingLabeler, ds: Dataset) -> tuple[list[list[str]], np.ndarray]:
    """(descriptions per scored class (M lists), group (M,) the dataset class each scored class counts for),
    resolved in the order of the module docstring."""
    if cfg.class_descriptions is not None:
        if len(cfg.class_descriptions) != ds.n_classes:
            raise FmgaugeError(
                f"class_descriptions has {len(cfg.class_descriptions)} lists but dataset {ds.name!r} has "
                f"{ds.n_classes} classes {list(ds.class_names)}; give one list of descriptions per class, in order."
            )
        return [list(d) for d in cfg.class_descriptions], np.arange(ds.n_classes)
    sc = scored_classes(ds, cfg.class_names, cfg.rest_classes)
    templates = first_set(cfg.templates, ds.meta.get("label_templates"), DEFAULT_TEMPLATES)
    negative = first_set(cfg.negative_descriptions, ds.meta.get("negative_descriptions"), DEFAULT_NEGATIVE)
    explicit = cfg.templates is not None or cfg.class_names is not None  # the config describes every class
    described = {} if explicit else (ds.meta.get("class_descriptions") or {})
    descs = []
    for m, c in enumerate(sc.names):
        if m == sc.negative:
            descs.append(list(negative))
        elif c in described:
            descs.append(list(described[c]))
        else:
            descs.append([t.format(c=negated(c)) for t in templates])
    return descs, np.asarray(sc.group)


def similarity_probs(text_emb: np.ndarray, class_emb: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(text_emb @ class_embᵀ / temperature): (N, D), (M, D) unit rows -> (N, M) float64."""
    logits = text_emb.astype(np.float64) @ class_emb.astype(np.float64).T / temperature  # (N, M)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def class_embeddings(cfg: TextEmbeddingLabeler, descriptions: list[list[str]]) -> np.ndarray:
    """(M, D) normalised mean of each class's normalised description embeddings."""
    flat = np.array([d for ds_ in descriptions for d in ds_], dtype=object)
    emb = embed_texts(cfg.model, flat, max_length=cfg.max_length, batch_size=cfg.batch_size, device=cfg.device,
                      dtype=cfg.dtype)  # (sum J_m, D)
    bounds = np.cumsum([0] + [len(d) for d in descriptions])
    c = np.stack([emb[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])  # (M, D)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def label_text_embedding(cfg: TextEmbeddingLabeler, ds: Dataset, split: str) -> LabelerOutput:
    """Zero-shot labels of a text split: probs (N, K) by the module docstring's formula, labels = argmax."""
    ids, texts = split_texts(ds, split, labeler="text-embedding")
    descriptions, group = class_descriptions(cfg, ds)
    log.info("text-embedding %s: %d texts of %s/%s, %d scored classes", cfg.model, len(texts), ds.name, split,
             len(descriptions))
    c = class_embeddings(cfg, descriptions)
    e = embed_texts(cfg.model, texts, max_length=cfg.max_length, batch_size=cfg.batch_size, device=cfg.device,
                    dtype=cfg.dtype)  # (N, D)
    p = similarity_probs(e, c, cfg.temperature)  # (N, M)
    probs = pool_classes(p, group, ds.n_classes)
    return LabelerOutput(ids=ids, probs=probs, labels=probs.argmax(1).astype(np.int64))


LABELERS.add("text-embedding", LabelerKind(TextEmbeddingLabeler, label_text_embedding))
