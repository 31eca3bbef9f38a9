"""Synthetic sequential data with learnable structure and generated item media.

Generative story (all vectorised numpy, scales to millions of items and users):
- items are spread over ``n_clusters`` latent clusters (every cluster non-empty);
- each cluster has its own title vocabulary, image (colour + stripe pattern), video (a square
  of its colour moving in its direction over its background) and audio chord
  (``synthetic_media.py``);
- users walk a sparse Markov chain over clusters (each cluster has ``successors`` next
  clusters with Dirichlet weights; with probability ``noise`` a uniform random jump);
- at each step the user picks an item of the current cluster, skewed towards the
  cluster's first items (``popularity_skew`` >= 1; 1 = uniform).
So the next item depends on the current one: a transition model beats popularity, and
content that reveals an item's cluster lets a recommender generalise across items.

Which modalities carry the cluster signal:
- ``modalities`` (subset of text, image, video, audio). Titles are always written; image,
  video and audio files are generated only for the media listed. A listed modality carries
  the signal; titles of a dataset without "text" take their words from a uniformly random
  cluster (no signal).
- ``signal`` (optional; modality -> probability in [0, 1], default 1 for each listed
  modality): the probability that an item's content in that modality shows its own
  cluster's pattern rather than that of a uniformly random cluster (possibly its own),
  drawn independently per item and modality. With ``{text: 0.3, image: 0.3, video: 0.7,
  audio: 0.7}`` (``conf/data/synthetic_av.yaml``) both title and image mislead for about half
  of the items, whose cluster only their video and audio reveal; the modalities are
  independent votes, so each one added identifies more items' clusters.

Raw config (``conf/data/synthetic.yaml: raw``): ``n_users``, ``n_items``, ``n_clusters``,
``successors``, ``min_length``, ``max_length``, ``noise``, ``popularity_skew``,
``words_per_cluster``, ``seed``, ``modalities``, ``signal``, and per medium ``image_size``
(pixels), ``video_frames``, ``video_size`` (pixels, even), ``audio_seconds`` (needed only
when that medium is listed). Files go to ``<processed_dir>/images/<key>.png``,
``videos/<key>.mp4`` and ``audio/<key>.wav`` (via the staging dir). Keys: users
0..n_users-1, items 1..n_items. Deterministic in ``seed``; a dataset with signal 1 in text
and image and no video or audio is what it was before video and audio existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
import polars as pl
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from data_prep.readers import RawDataset, RawOptions, ReadContext, items_frame, register_reader
from data_prep.readers.synthetic_media import write_media

MODALITIES = ("text", "image", "video", "audio")
Modality = Literal["text", "image", "video", "audio"]
Probability = Annotated[float, Field(ge=0, le=1)]
SYLLABLES = np.array(
    "ka lo mi ne ru sa to vi ze bo da fe gu hi jo ku la me no pi qu re si tu va wo xe yo zu"
    .split()
)


def _cluster_items(item_cluster: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Items grouped by cluster as CSR: (offsets int64 [C+1], item indices int64 [n_items])."""
    order = np.argsort(item_cluster, kind="stable")
    offsets = np.zeros(n_clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(item_cluster, minlength=n_clusters), out=offsets[1:])
    return offsets, order


def generate_sequences(cfg: Mapping, rng: np.random.Generator, item_cluster: np.ndarray):
    """Walk the cluster Markov chain for every user at once.

    Returns:
        (user int64 [nnz], item int64 [nnz] in 1..n_items), users contiguous, in order.
    """
    n_users, n_clusters = int(cfg["n_users"]), int(cfg["n_clusters"])
    successors = min(int(cfg["successors"]), n_clusters)
    min_length, max_length = int(cfg["min_length"]), int(cfg["max_length"])
    next_cluster = rng.integers(0, n_clusters, size=(n_clusters, successors))
    next_weight_cdf = np.cumsum(rng.dirichlet(np.ones(successors), size=n_clusters), axis=1)
    offsets, cluster_members = _cluster_items(item_cluster, n_clusters)
    sizes = np.diff(offsets)

    lengths = rng.integers(min_length, max_length + 1, size=n_users)
    steps = np.zeros((n_users, max_length), dtype=np.int64)
    cluster = rng.integers(0, n_clusters, size=n_users)
    for t in range(max_length):
        if t:
            draw = rng.random(n_users)[:, None]
            choice = np.minimum((draw > next_weight_cdf[cluster]).sum(axis=1), successors - 1)
            cluster = next_cluster[cluster, choice]
            jump = rng.random(n_users) < float(cfg["noise"])
            cluster[jump] = rng.integers(0, n_clusters, size=int(jump.sum()))
        skewed = rng.random(n_users) ** float(cfg["popularity_skew"])
        rank = np.minimum((skewed * sizes[cluster]).astype(np.int64), sizes[cluster] - 1)
        steps[:, t] = cluster_members[offsets[cluster] + rank] + 1
    valid = np.arange(max_length)[None, :] < lengths[:, None]
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    return users, steps[valid]


def shown_clusters(
    item_cluster: np.ndarray, signal: float, n_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """The cluster whose pattern each item's content in one modality shows: its own with
    probability ``signal``, else a uniformly random one. int64 [n_items]; draws nothing from
    ``rng`` when ``signal`` is 1, and only the random clusters when it is 0."""
    if signal >= 1:
        return item_cluster
    if signal <= 0:
        return rng.integers(0, n_clusters, size=len(item_cluster))
    shown = item_cluster.copy()
    decoy = rng.random(len(shown)) >= signal
    shown[decoy] = rng.integers(0, n_clusters, size=int(decoy.sum()))
    return shown


def generate_titles(cfg: Mapping, rng: np.random.Generator, item_cluster: np.ndarray, signal: float):
    """Titles ``"<w> <w> <w> <item>"``, words from the vocabulary of the cluster each item
    shows (``shown_clusters`` with the text ``signal``); list[str]."""
    n_clusters, n_words = int(cfg["n_clusters"]), int(cfg["words_per_cluster"])
    n_items = len(item_cluster)
    syllables = rng.integers(0, len(SYLLABLES), size=(n_clusters * n_words, 3))
    vocabulary = SYLLABLES[syllables[:, 0]]
    for column in (1, 2):
        vocabulary = np.char.add(vocabulary, SYLLABLES[syllables[:, column]])
    shown = shown_clusters(item_cluster, signal, n_clusters, rng)
    picks = shown[:, None] * n_words + rng.integers(0, n_words, size=(n_items, 3))
    words = vocabulary[picks]
    titles = np.char.add(np.char.add(words[:, 0], " "), words[:, 1])
    titles = np.char.add(np.char.add(titles, " "), words[:, 2])
    numbers = np.arange(1, n_items + 1).astype(str)
    return np.char.add(np.char.add(titles, " "), numbers).tolist()


def _signal(raw: Mapping) -> dict[str, float]:
    """Modality -> probability that an item's content shows its own cluster (0 if unlisted)."""
    listed, signal = set(raw["modalities"]), dict(raw["signal"])
    return {m: float(signal.get(m, 1.0)) if m in listed else 0.0 for m in MODALITIES}


class SyntheticRaw(RawOptions):
    n_users: PositiveInt = 5000
    n_items: PositiveInt = 2000
    n_clusters: PositiveInt = 50
    successors: PositiveInt = 3
    noise: Probability = 0.1
    popularity_skew: Annotated[float, Field(ge=1)] = 2.0
    min_length: Annotated[int, Field(ge=3)] = 5
    max_length: Annotated[int, Field(ge=3)] = 30
    words_per_cluster: PositiveInt = 8
    image_size: PositiveInt = 32
    video_frames: PositiveInt = 16
    video_size: Annotated[int, Field(gt=0, multiple_of=2)] = 64
    audio_seconds: PositiveFloat = 1.0
    modalities: list[Modality] = ["text", "image"]
    signal: dict[Modality, Probability] = {}
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticRaw:
        if self.n_clusters > self.n_items:
            raise ValueError(f"need n_clusters <= n_items, got {self.n_clusters} > {self.n_items}")
        if self.min_length > self.max_length:
            raise ValueError(f"need min_length <= max_length, got {self.min_length} > {self.max_length}")
        return self


@register_reader("synthetic", SyntheticRaw)
def read_synthetic(raw: Mapping, ctx: ReadContext) -> RawDataset:
    """Generate a synthetic dataset from ``raw`` (see module docstring); deterministic in
    ``raw.seed``."""
    rng = np.random.default_rng(int(raw["seed"]))
    n_items, n_clusters = int(raw["n_items"]), int(raw["n_clusters"])
    signal = _signal(raw)
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters)
    users, items = generate_sequences(raw, rng, item_cluster)
    titles = generate_titles(raw, rng, item_cluster, signal["text"])
    media = {}
    for kind in ("image", "video", "audio"):
        if kind in raw["modalities"]:
            shown = shown_clusters(item_cluster, signal[kind], n_clusters, rng)
            media[f"{kind}_paths"] = write_media(kind, raw, rng, shown, n_clusters, ctx)
    catalogue = items_frame(list(range(1, n_items + 1)), titles, **media)
    interactions = pl.DataFrame({"user_key": users, "item_key": items})
    return RawDataset(items=catalogue, interactions=interactions, dropped=ctx.dropped_counts())
