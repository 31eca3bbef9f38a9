"""Synthetic generator: learnable sequential structure, generated images, determinism."""

import numpy as np
import pytest
from PIL import Image

from data_prep.protocol import apply_protocol
from data_prep.readers import ReadContext, get_reader
from recsys.data.sequences import UserSequences

CONFIG = {
    "n_users": 1500, "n_items": 600, "n_clusters": 30, "successors": 3, "noise": 0.1,
    "popularity_skew": 2.0, "min_length": 5, "max_length": 30, "words_per_cluster": 8,
    "image_size": 16, "modalities": ["text", "image"], "seed": 0,
}


def _generate(tmp_path, **overrides):
    """(raw, dataset); images go to tmp_path/images."""
    ctx = ReadContext(staging_dir=tmp_path, final_dir=tmp_path)
    raw = get_reader("synthetic")({**CONFIG, **overrides}, ctx)
    return raw, apply_protocol(raw, min_interactions=5, keep_last=None, dataset="synthetic")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    return (directory, *_generate(directory))


def _hit_rate_at_10(scores: np.ndarray, targets: np.ndarray) -> float:
    scores = scores.copy()
    scores[:, 0] = -np.inf
    top10 = np.argpartition(-scores, 10, axis=1)[:, :10]
    return float((top10 == targets[:, None]).any(axis=1).mean())


def test_transition_counts_beat_popularity(synthetic):
    _, _, dataset = synthetic
    sequences = UserSequences.from_interactions(
        dataset.interactions, dataset.num_users, dataset.num_items)
    n = dataset.num_items
    transitions = np.zeros((n + 1, n + 1))
    lengths, offsets = sequences.lengths, sequences.offsets
    for start, length in zip(offsets[:-1], lengths, strict=True):  # train parts s[:-2]
        train = sequences.items[start:start + length - 2]
        np.add.at(transitions, (train[:-1], train[1:]), 1)
    split = sequences.eval_split("test", window=10)
    last_inputs = split.batch(sequences.items, np.arange(len(split)))["inputs"][:, -1]
    popularity = sequences.train_popularity()
    pop_hr = _hit_rate_at_10(np.tile(popularity, (len(split), 1)), split.targets)
    markov_hr = _hit_rate_at_10(transitions[last_inputs] + 1e-3 * popularity, split.targets)
    print(f"HR@10 transition counts {markov_hr:.3f}, popularity {pop_hr:.3f}")
    assert markov_hr > 2 * pop_hr and markov_hr > 0.2, (markov_hr, pop_hr)


def test_images_and_titles(synthetic):
    directory, raw, dataset = synthetic
    paths = dataset.items["image_path"].to_list()
    assert dataset.stats["missing"]["image_path"] == 0
    image = Image.open(paths[0])
    assert image.size == (16, 16) and image.mode == "RGB"
    assert all(p == str(directory / "images" / f"{key}.png")
               for p, key in zip(paths, dataset.items["key"], strict=True))
    titles = raw.items["title"].to_list()
    assert len(titles) == CONFIG["n_items"] and all(titles)
    assert titles[0].endswith(" 1") and len(titles[0].split()) == 4


def test_deterministic_in_seed_and_text_only(tmp_path):
    first, _ = _generate(tmp_path / "a", n_users=50, n_items=40, modalities=["text"])
    again, _ = _generate(tmp_path / "b", n_users=50, n_items=40, modalities=["text"])
    assert first.interactions.equals(again.interactions) and first.items.equals(again.items)
    assert first.items["image_path"].null_count() == 40
    assert not (tmp_path / "a" / "images").exists()
    other, _ = _generate(tmp_path / "c", n_users=50, n_items=40, modalities=[], seed=1)
    assert not other.interactions.equals(first.interactions)
