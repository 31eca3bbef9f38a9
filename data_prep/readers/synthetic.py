"""Synthetic sequential data with learnable structure (+ generated item images).

Generative story (all vectorised numpy, scales to millions of items and users):
- items are spread over ``n_clusters`` latent clusters (every cluster non-empty);
- each cluster has its own title vocabulary and its own image colour + stripe pattern;
- users walk a sparse Markov chain over clusters (each cluster has ``successors`` next
  clusters with Dirichlet weights; with probability ``noise`` a uniform random jump);
- at each step the user picks an item of the current cluster, skewed towards the
  cluster's first items (``popularity_skew`` >= 1; 1 = uniform).
So the next item depends on the current one: a transition model beats popularity.

Raw config (``conf/data/synthetic.yaml: raw``): ``n_users``, ``n_items``, ``n_clusters``,
``successors``, ``min_length``, ``max_length``, ``noise``, ``popularity_skew``,
``words_per_cluster``, ``seed``, ``modalities`` (subset of [text, image]; titles are always
written, "text" makes them cluster-specific), ``image_size`` (pixels).
Images are PNGs written to ``<processed_dir>/images/<item key>.png`` (via the staging dir).
Keys: users 0..n_users-1, items 1..n_items.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from data_prep.readers import RawDataset, ReadContext, items_frame, register_reader

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


def generate_titles(cfg: Mapping, rng: np.random.Generator, item_cluster: np.ndarray):
    """Titles ``"<w> <w> <w> <item>"``, words from the item's cluster vocabulary; list[str]."""
    n_clusters, n_words = int(cfg["n_clusters"]), int(cfg["words_per_cluster"])
    n_items = len(item_cluster)
    syllables = rng.integers(0, len(SYLLABLES), size=(n_clusters * n_words, 3))
    vocabulary = SYLLABLES[syllables[:, 0]]
    for column in (1, 2):
        vocabulary = np.char.add(vocabulary, SYLLABLES[syllables[:, column]])
    if "text" not in cfg["modalities"]:  # uninformative: words independent of the cluster
        item_cluster = rng.integers(0, n_clusters, size=n_items)
    picks = item_cluster[:, None] * n_words + rng.integers(0, n_words, size=(n_items, 3))
    words = vocabulary[picks]
    titles = np.char.add(np.char.add(words[:, 0], " "), words[:, 1])
    titles = np.char.add(np.char.add(titles, " "), words[:, 2])
    numbers = np.arange(1, n_items + 1).astype(str)
    return np.char.add(np.char.add(titles, " "), numbers).tolist()


def write_images(cfg, rng, item_cluster: np.ndarray, ctx: ReadContext, chunk: int = 4096):
    """Write one RGB PNG [S, S, 3] per item: cluster colour and stripe angle/frequency, item
    phase and noise. Returns the absolute final path of each item's image (list[str])."""
    if ctx.staging_dir is None or ctx.final_dir is None:
        raise ValueError("synthetic images need ReadContext.staging_dir and final_dir")
    n_clusters, size = int(cfg["n_clusters"]), int(cfg["image_size"])
    staging, final = Path(ctx.staging_dir) / "images", Path(ctx.final_dir).absolute() / "images"
    staging.mkdir(parents=True, exist_ok=True)
    colour = rng.integers(40, 256, size=(n_clusters, 3)).astype(np.float32)
    angle = rng.uniform(0, np.pi, size=n_clusters)
    frequency = rng.uniform(0.3, 1.5, size=n_clusters)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    n_items = len(item_cluster)
    for start in range(0, n_items, chunk):
        c = item_cluster[start:start + chunk]
        phase = rng.uniform(0, 2 * np.pi, size=len(c))
        along = x * np.cos(angle[c])[:, None, None] + y * np.sin(angle[c])[:, None, None]
        stripes = np.sin(frequency[c][:, None, None] * along + phase[:, None, None]) > 0
        shade = np.where(stripes, 1.0, 0.35)[..., None] * colour[c][:, None, None, :]
        noise = rng.normal(0, 12, size=shade.shape)
        pixels = np.clip(shade + noise, 0, 255).astype(np.uint8)
        for offset, image in enumerate(pixels, start=start + 1):
            Image.fromarray(image).save(staging / f"{offset}.png", compress_level=1)
    return [str(final / f"{key}.png") for key in range(1, n_items + 1)]


@register_reader("synthetic")
def read_synthetic(raw: Mapping, ctx: ReadContext) -> RawDataset:
    """Generate a synthetic dataset from ``raw`` (see module docstring); deterministic in
    ``raw.seed``."""
    rng = np.random.default_rng(int(raw["seed"]))
    n_items, n_clusters = int(raw["n_items"]), int(raw["n_clusters"])
    if not 1 <= n_clusters <= n_items:
        raise ValueError(f"need 1 <= n_clusters <= n_items, got {n_clusters}, {n_items}")
    unknown = set(raw["modalities"]) - {"text", "image"}
    if unknown:
        raise ValueError(f"unknown synthetic modalities {sorted(unknown)}; use text, image")
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters)
    users, items = generate_sequences(raw, rng, item_cluster)
    titles = generate_titles(raw, rng, item_cluster)
    images = write_images(raw, rng, item_cluster, ctx) if "image" in raw["modalities"] else None
    catalogue = items_frame(list(range(1, n_items + 1)), titles, images)
    interactions = pl.DataFrame({"user_key": users, "item_key": items})
    return RawDataset(items=catalogue, interactions=interactions, dropped=ctx.dropped_counts())
