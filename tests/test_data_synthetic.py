"""Synthetic generator: learnable sequential structure, generated images, videos and audio
(decoded, cluster-specific), the signal probability, determinism."""

from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
import soundfile
from conftest import job_config
from PIL import Image

from data_prep.prep import run
from data_prep.protocol import apply_protocol
from data_prep.readers import ReadContext, read_raw
from data_prep.readers.synthetic import shown_clusters
from recsys.data.processed import ProcessedDataset
from recsys.data.sequences import UserSequences

CONFIG = {
    "n_users": 1500, "n_items": 600, "n_clusters": 30, "successors": 3, "noise": 0.1,
    "popularity_skew": 2.0, "min_length": 5, "max_length": 30, "words_per_cluster": 8,
    "image_size": 16, "modalities": ["text", "image"], "seed": 0,
}


def _generate(tmp_path, **overrides):
    """(raw, dataset); images go to tmp_path/images."""
    ctx = ReadContext(staging_dir=tmp_path, final_dir=tmp_path)
    raw = read_raw("synthetic", {**CONFIG, **overrides}, ctx)
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


AV_OVERRIDES = ["data=synthetic_av", "data.raw.n_users=60", "data.raw.n_items=24",
                "data.raw.n_clusters=3", "data.raw.image_size=8",
                "data.raw.signal.video=1.0", "data.raw.signal.audio=1.0"]


def _prepare_av(data_dir, *overrides: str):
    """The synthetic_av config, tiny and with video + audio always showing the item's own
    cluster, prepared by recsys-prep into ``data_dir``; returns the loaded dataset."""
    cfg = job_config("prep", [*AV_OVERRIDES, f"paths.data_dir={data_dir}", *overrides])
    return ProcessedDataset.load(run(cfg))


@pytest.fixture(scope="module")
def synthetic_av(tmp_path_factory):
    dataset = _prepare_av(tmp_path_factory.mktemp("synthetic_av"))
    keys = dataset.items["key"].cast(pl.Int64).to_numpy()
    clusters = np.random.default_rng(0).permutation(np.arange(24) % 3)  # the reader's first draw
    return dataset, clusters[keys - 1]


def _decode_video(path) -> tuple[np.ndarray, str, str]:
    """(frames uint8 [T, H, W, 3], codec, pixel format)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream.codec_context.name, stream.codec_context.pix_fmt


def _within_below_between(features: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """Mean distance between items of the same cluster, and of different clusters."""
    distance = np.linalg.norm(features[:, None] - features[None], axis=-1)
    same = clusters[:, None] == clusters[None]
    off_diagonal = ~np.eye(len(clusters), dtype=bool)
    return distance[same & off_diagonal].mean(), distance[~same].mean()


def test_av_files_decode_with_the_documented_format(synthetic_av):
    dataset, _ = synthetic_av
    items = dataset.items
    assert dataset.stats["missing"] == {"image_path": 0, "video_path": 0, "audio_path": 0,
                                        "description": dataset.num_items}
    video, audio = items["video_path"][0], items["audio_path"][0]
    processed = Path(dataset.items["image_path"][0]).parents[1]
    assert Path(video).parent == processed / "videos" and video.endswith(".mp4")
    assert Path(audio).parent == processed / "audio" and audio.endswith(".wav")
    frames, codec, pix_fmt = _decode_video(video)
    assert frames.shape == (16, 64, 64, 3) and (codec, pix_fmt) == ("mpeg4", "yuv420p")
    wave, rate = soundfile.read(audio, dtype="float32")
    info = soundfile.info(audio)
    assert wave.shape == (16000,) and rate == 16000
    assert (info.channels, info.subtype, info.format) == (1, "PCM_16", "WAV")


def test_av_media_show_the_items_cluster(synthetic_av):
    dataset, clusters = synthetic_av
    colours = np.stack([_decode_video(p)[0].reshape(-1, 3).mean(axis=0)
                        for p in dataset.items["video_path"]])
    within, between = _within_below_between(colours, clusters)
    assert within < between / 4, (within, between)
    dominant = np.array([np.abs(np.fft.rfft(soundfile.read(p)[0])).argmax()  # 1 Hz bins
                         for p in dataset.items["audio_path"]])
    for cluster in range(3):
        assert np.ptp(dominant[clusters == cluster]) <= 1
    assert len({dominant[clusters == c][0] for c in range(3)}) == 3


def test_av_generation_is_deterministic(synthetic_av, tmp_path):
    dataset, _ = synthetic_av
    again = _prepare_av(tmp_path)
    assert again.interactions.equals(dataset.interactions)
    for column in ("image_path", "video_path", "audio_path"):
        first, second = dataset.items[column][5], again.items[column][5]
        assert first != second and Path(first).read_bytes() == Path(second).read_bytes()


def test_signal_is_the_probability_of_showing_the_own_cluster():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 10, size=20000)
    assert shown_clusters(clusters, 1.0, 10, rng) is clusters
    own = (shown_clusters(clusters, 0.3, 10, rng) == clusters).mean()
    assert abs(own - (0.3 + 0.7 / 10)) < 0.015
    assert abs((shown_clusters(clusters, 0.0, 10, rng) == clusters).mean() - 0.1) < 0.015


@pytest.mark.parametrize("overrides, message", [
    ({"modalities": ["text", "smell"]},
     "modalities.1\n  Input should be 'text', 'image', 'video' or 'audio'"),
    ({"signal": {"image": 1.5}}, "signal.image\n  Input should be less than or equal to 1"),
    ({"n_clusters": 50}, "need n_clusters <= n_items, got 50 > 40"),
])
def test_bad_modalities_or_signal_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _generate(tmp_path, n_users=20, n_items=40, **overrides)
