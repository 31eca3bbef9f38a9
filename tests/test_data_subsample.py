"""Data-efficient training (recsys.data.subsample, data.subsample): deterministic subsets of
the training data, the kept fraction of each strategy, fraction 1 = the full batches, the
validation / test sets untouched, and the counts the datamodule reports. Real MovieLens-100K
(943 users, 20 to 737 ratings each) where it is cheap, small hand-made sequences otherwise."""

import logging
import math

import numpy as np
import pytest
import torch
from conftest import CPU_RUN, ID_ONLY, SMALL_SYNTHETIC, job_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from data_prep.prep import prepare
from recsys.config.schema import ConfigError, check_config
from recsys.data.datamodule import SequenceDataModule
from recsys.data.sequences import UserSequences
from recsys.data.subsample import (
    STRATA,
    STRATEGIES,
    Subsample,
    popularity_strata,
    stratum_quotas,
    subsample_train,
)
from recsys.train.builders import build_datamodule

TARGETS = ("windows", "prefixes")


@pytest.fixture(scope="module")
def movielens_dir(shared_data, tmp_path_factory):
    root = shared_data / "movielens-100k-posters"
    data = {
        "name": "movielens", "reader": "movielens", "on_error": "raise",
        "raw": {"ratings_file": str(root / "ml-100k/u.data"), "items_file": str(root / "ml-100k/u.item"),
                "overviews_file": str(root / "data/items.csv"), "posters_dir": str(root / "data/posters")},
        "protocol": {"min_interactions": 5, "keep_last": None, "window": 10},
        "processed_dir": str(tmp_path_factory.mktemp("data") / "movielens"),
    }
    return prepare(data)


def _datamodule(directory, subsample=None, train_targets="windows") -> SequenceDataModule:
    dm = SequenceDataModule(directory, batch_size=512, eval_batch_size=512, train_targets=train_targets,
                            subsample=subsample)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def full(movielens_dir):
    return _datamodule(movielens_dir)


def _batches(loader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def _same_batches(loader, expected_loader) -> bool:
    """Whether two loaders give equal batches, in the same order."""
    got, expected = list(loader), list(expected_loader)
    return len(got) == len(expected) and all(
        g.keys() == e.keys() and all(torch.equal(g[k], e[k]) for k in e)
        for g, e in zip(got, expected, strict=True))


def _trained_targets(dm) -> list[int]:
    """Every item a training batch predicts (its predicted positions' next items), sorted."""
    batch = _batches(dm.train_dataloader())
    return sorted(batch["items"][:, 1:][batch["predict"]].tolist())


def _window_users(dm) -> np.ndarray:
    """int64 [W] the user of each training window."""
    starts = dm.train_dataloader().dataset.windows.starts
    return np.searchsorted(dm.sequences.offsets, starts, side="right") - 1


@pytest.mark.parametrize("train_targets", TARGETS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fraction_one_gives_exactly_the_full_batches(movielens_dir, strategy, train_targets):
    everything = _datamodule(movielens_dir, train_targets=train_targets)
    subsampled = _datamodule(movielens_dir, Subsample(1.0, strategy, seed=7), train_targets)
    for stage in ("train", "val", "test"):
        loader = f"{stage}_dataloader"
        assert _same_batches(getattr(subsampled, loader)(), getattr(everything, loader)())
    assert torch.equal(subsampled.train_popularity, everything.train_popularity)
    assert subsampled.subsample_stats["kept"] == subsampled.subsample_stats["full"]


@pytest.mark.parametrize("strategy", ["random_users", "popularity_stratified"])
def test_the_subset_is_a_function_of_the_seed(movielens_dir, strategy):
    def kept_users(seed):
        return set(_window_users(_datamodule(movielens_dir, Subsample(0.25, strategy, seed))).tolist())

    first = kept_users(0)
    assert kept_users(0) == first and kept_users(1) != first
    batches = [_batches(_datamodule(movielens_dir, Subsample(0.25, strategy, 0)).train_dataloader())
               for _ in range(2)]
    assert torch.equal(batches[0]["items"], batches[1]["items"])  # the same batches, in the same order


def test_recent_needs_no_seed(movielens_dir):
    parts = [_datamodule(movielens_dir, Subsample(0.3, "recent", seed)).train_parts for seed in (0, 1)]
    assert np.array_equal(parts[0].starts, parts[1].starts) and np.array_equal(parts[0].ends, parts[1].ends)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.77])
@pytest.mark.parametrize("strategy", ["random_users", "popularity_stratified"])
def test_user_strategies_keep_the_fraction_of_users_with_whole_parts(movielens_dir, full, strategy, fraction):
    dm = _datamodule(movielens_dir, Subsample(fraction, strategy))
    kept = dm.train_parts.lengths > 0
    assert kept.sum() == math.floor(fraction * 943 + 0.5)
    full_parts = full.train_parts
    assert np.array_equal(dm.train_parts.lengths[kept], full_parts.lengths[kept])  # whole train parts
    assert np.array_equal(dm.train_parts.starts, full_parts.starts)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_recent_keeps_each_users_latest_interactions(movielens_dir, full, fraction):
    dm = _datamodule(movielens_dir, Subsample(fraction, "recent"))
    lengths, parts = full.train_parts.lengths, dm.train_parts
    assert np.array_equal(parts.ends, full.train_parts.ends)  # up to the validation target
    kept = parts.lengths
    assert np.all(kept >= np.maximum(fraction * lengths, 2) - 1e-9) and np.all(kept < fraction * lengths + 2)
    assert kept.sum() / lengths.sum() == pytest.approx(fraction, abs=943 / lengths.sum())  # < 1 item per user
    sequences = dm.sequences
    expected = sorted(
        item for u in range(943) for item in sequences.sequence(u)[:-2][-kept[u]:][1:].tolist()
    )
    assert _trained_targets(dm) == expected  # the latest ones are the targets ...
    windows = dm.train_dataloader().dataset.windows
    assert np.array_equal(windows.starts, parts.starts[_window_users(dm)])  # ... and nothing older is input


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_popularity_stratified_keeps_the_strata_proportions(movielens_dir, full, fraction):
    sequences = full.sequences
    strata = popularity_strata(sequences, np.arange(943))
    assert len(strata) == STRATA and {len(s) for s in strata} == {94, 95}
    # the strata are ordered by the users' mean training-item popularity
    popularity = sequences.train_popularity()
    means = [[popularity[sequences.sequence(u)[:-2]].mean() for u in s] for s in strata]
    assert all(max(low) <= min(high) for low, high in zip(means, means[1:], strict=False))
    dm = _datamodule(movielens_dir, Subsample(fraction, "popularity_stratified", seed=3))
    kept = dm.train_parts.lengths > 0
    for stratum in strata:
        share = fraction * len(stratum)
        assert math.floor(share) <= kept[stratum].sum() <= math.ceil(share)


def test_stratum_quotas_round_by_largest_remainder():
    assert stratum_quotas(np.array([10, 10, 10]), 0.25).tolist() == [3, 3, 2]  # 7.5 -> 8; ties: earlier
    assert stratum_quotas(np.array([3, 7, 5]), 0.5).tolist() == [2, 4, 2]  # remainders .5: 2 earlier up
    assert stratum_quotas(np.array([95, 94, 0]), 1.0).tolist() == [95, 94, 0]
    assert stratum_quotas(np.array([4, 4, 4]), 0.01).tolist() == [1, 0, 0]  # at least one user
    assert stratum_quotas(np.array([0, 0]), 0.5).tolist() == [0, 0]


@pytest.mark.parametrize("train_targets", TARGETS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_validation_and_test_stay_whole_and_are_never_trained_on(movielens_dir, full, strategy,
                                                                   train_targets):
    dm = _datamodule(movielens_dir, Subsample(0.25, strategy, seed=1), train_targets)
    for stage in ("val", "test"):
        loader = f"{stage}_dataloader"
        assert _same_batches(getattr(dm, loader)(), getattr(full, loader)())
        users = torch.cat([batch["user"] for batch in getattr(dm, loader)()])
        assert torch.equal(users, torch.arange(943))  # a user dropped from training too
    windows = dm.train_dataloader().dataset.windows
    validation_target = dm.sequences.offsets[1:] - 2  # flat position of each user's val target
    assert np.all(windows.ends <= validation_target[_window_users(dm)])  # targets lie before it


@pytest.mark.parametrize("train_targets", TARGETS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_counts_reported_are_the_batches(movielens_dir, strategy, train_targets, caplog):
    with caplog.at_level(logging.INFO, logger="recsys.data.datamodule"):
        dm = _datamodule(movielens_dir, Subsample(0.25, strategy, seed=2), train_targets)
    stats = dm.subsample_stats
    assert {k: stats[k] for k in ("fraction", "strategy", "seed")} == {
        "fraction": 0.25, "strategy": strategy, "seed": 2}
    batch = _batches(dm.train_dataloader())
    kept = stats["kept"]
    assert kept == {"users": len(set(_window_users(dm).tolist())), "targets": int(batch["predict"].sum()),
                    "interactions": int(dm.train_parts.lengths.sum()), "sequences": len(batch["items"])}
    everything = _datamodule(movielens_dir, train_targets=train_targets)
    full_batch = _batches(everything.train_dataloader())
    assert stats["full"] == everything.subsample_stats["kept"] == {
        "users": 943, "targets": 100_000 - 3 * 943, "interactions": 100_000 - 2 * 943,
        "sequences": len(full_batch["items"])}
    assert kept["targets"] < stats["full"]["targets"]
    assert f"{kept['targets']} of {stats['full']['targets']} targets" in caplog.text
    # the loss' and the popularity baseline's popularity is that of the data trained on
    assert dm.train_popularity.sum() == kept["interactions"]


def test_users_without_a_training_target_are_left_as_they_are():
    # user 0: 3 items (train part of one, no target), user 1: 4, user 2: 12
    lengths = [3, 4, 12]
    sequences = UserSequences(np.cumsum([0, *lengths]), np.arange(1, 20, dtype=np.int32), num_items=19)
    recent = subsample_train(sequences, Subsample(0.1, "recent"))
    assert recent.lengths.tolist() == [1, 2, 2]  # at least one target each
    assert recent.counts() == {"users": 2, "targets": 2, "interactions": 5}
    for strategy in ("random_users", "popularity_stratified"):
        parts = subsample_train(sequences, Subsample(0.01, strategy))
        assert parts.lengths[0] == 1 and (parts.lengths[1:] > 0).sum() == 1  # at least one user
        assert len(sequences.train_windows(1, parts)) == parts.counts()["targets"]  # window 1: one each


@pytest.mark.parametrize(("override", "message"), [
    ("fraction=0", "data.subsample.fraction: 0: Input should be greater than 0"),
    ("fraction=1.5", "data.subsample.fraction: 1.5: Input should be less than or equal to 1"),
    ("strategy=oldest", "data.subsample.strategy: 'oldest': Input should be 'random_users', 'recent' or"),
])
def test_bad_subsample_settings_are_refused_by_the_schema(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        check_config(job_config("train", [f"data.subsample.{override}"], tmp_path / "run"), "train")


@pytest.mark.parametrize("options", [{"fraction": 0.0}, {"fraction": 1.5}, {"strategy": "oldest"}])
def test_bad_subsample_settings_are_refused_by_the_datamodule(options):
    with pytest.raises(ValueError, match="subsample"):
        Subsample(**options)


def test_build_datamodule_takes_the_runs_seed_unless_set(movielens_dir, tmp_path):
    base = [f"data.processed_dir={movielens_dir}", "seed=5"]
    cfg = job_config("train", [*base, "data.subsample.fraction=0.5", "data.subsample.strategy=recent"],
                     tmp_path)
    check_config(cfg, "train")
    assert build_datamodule(cfg).subsample == Subsample(0.5, "recent", 5)
    cfg = job_config("train", [*base, "data.subsample.seed=9"], tmp_path)
    assert build_datamodule(cfg).subsample == Subsample(1.0, "random_users", 9)
    with open_dict(cfg):
        del cfg.data["subsample"]  # a run made before data.subsample existed: all its training data
    assert build_datamodule(cfg).subsample == Subsample(1.0, "random_users", 5)


@pytest.mark.parametrize(("experiment", "dataset", "label", "epochs"), [
    ("data_efficiency", "movielens", "iisan", 20),
    ("data_efficiency_scientific", "scientific", "iisan_intra", 100),
])
def test_the_data_efficiency_sweep_is_fractions_times_seeds(experiment, dataset, label, epochs, tmp_path):
    from recsys.cli import compose

    cfg = compose("train", [f"experiment={experiment}"], return_hydra_config=True)
    sweeps = {o.key_or_group: o.sweep_string_iterator() for o in OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()])}
    assert {k: list(v) for k, v in sweeps.items()} == {
        "data.subsample.fraction": ["0.1", "0.25", "0.5", "1.0"], "seed": ["0", "1", "2"]}
    job = job_config("train", [f"experiment={experiment}", "data.subsample.fraction=0.25"],
                     tmp_path / "run")
    check_config(job, "train")
    assert (job.label, job.data.name, job.adapter.name, job.trainer.max_epochs) == (
        label, dataset, "iisan", epochs)
    assert job.data.subsample.fraction == 0.25 and "csv" in job.logger


@pytest.mark.slow
def test_a_run_on_half_the_training_users_reports_its_fraction(tmp_path, caplog):
    from recsys.cli.train import train

    overrides = [*SMALL_SYNTHETIC, *CPU_RUN, *ID_ONLY, f"paths.data_dir={tmp_path / 'data'}",
                 "data.subsample.fraction=0.5", "+trainer.limit_val_batches=1"]
    with caplog.at_level(logging.INFO, logger="recsys.data.datamodule"):
        results = train(job_config("train", overrides, tmp_path / "run"))
    assert results["status"] == "complete", results["error"]
    assert "300 of 600 users" in caplog.text  # every synthetic user has a training target
    assert results["config"]["data"]["subsample"] == {"fraction": 0.5, "strategy": "random_users", "seed": 42}
    kept = results["data_subsample"]  # the counts travel in results.json
    assert kept["fraction"] == 0.5 and kept["kept"]["users"] == 300 and kept["full"]["users"] == 600
    assert 0 <= results["metrics"]["test"]["hr@10"] <= 1
