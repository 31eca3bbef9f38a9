"""UserSequences leave-one-out against a brute-force Python reference."""

import numpy as np
import polars as pl
import pytest

from recsys.data.sequences import UserSequences


def _pad_left(items: list[int], length: int) -> list[int]:
    items = items[-length:] if items else []
    return [0] * (length - len(items)) + items


def reference_train_windows(seqs: list[list[int]], window: int) -> list[list[int]]:
    """Windows of window+1 from the end of s[:-2] backwards, stride window, left-padded."""
    out = []
    for s in seqs:
        train = s[:-2]
        end = len(train)
        while end >= 2:
            out.append(_pad_left(train[max(0, end - window - 1):end], window + 1))
            end -= window
    return out


def reference_eval(seqs: list[list[int]], window: int, holdout: int):
    rows = []
    for user, s in enumerate(seqs):
        cut = len(s) - holdout
        target = s[cut]
        history = sorted(s[:cut])  # everything before the target, a repeat of it included
        rows.append((_pad_left(s[max(0, cut - window):cut], window), target, history, user))
    return rows


def _random_sequences(rng, n_users, n_items, min_len, max_len):
    return [rng.integers(1, n_items + 1, size=rng.integers(min_len, max_len + 1)).tolist()
            for _ in range(n_users)]


def _csr(seqs, n_items) -> UserSequences:
    frame = pl.DataFrame({"user_id": [u for u, s in enumerate(seqs) for _ in s],
                          "item_id": [i for s in seqs for i in s]},
                         schema={"user_id": pl.Int32, "item_id": pl.Int32})
    return UserSequences.from_interactions(frame, len(seqs), n_items)


@pytest.mark.parametrize("min_len, max_len, window", [(5, 13, 10), (3, 80, 10), (3, 40, 4)])
def test_windows_and_eval_match_reference(min_len, max_len, window):
    rng = np.random.default_rng(min_len * 100 + max_len)
    seqs = _random_sequences(rng, 60, 30, min_len, max_len)
    sequences = _csr(seqs, 30)
    assert sequences.offsets.dtype == np.int64 and sequences.items.dtype == np.int32

    windows = sequences.train_windows(window)
    got = windows.gather(sequences.items, np.arange(len(windows))).tolist()
    assert sorted(got) == sorted(reference_train_windows(seqs, window))
    windows_array = np.array(got)
    predicted = (windows_array[:, :-1] > 0) & (windows_array[:, 1:] > 0)  # real input+target
    assert predicted.sum() == sum(len(s) - 3 for s in seqs)  # every train target exactly once

    for stage, holdout in (("val", 2), ("test", 1)):
        split = sequences.eval_split(stage, window)
        batch = split.batch(sequences.items, np.arange(len(split)))
        for row, (inputs, target, history, user) in enumerate(
                reference_eval(seqs, window, holdout)):
            assert batch["inputs"][row].tolist() == inputs
            assert batch["target"][row] == target and batch["user"][row] == user
            got_history = batch["history"][row]
            assert sorted(got_history[got_history > 0].tolist()) == history


@pytest.mark.parametrize("window", [10, 4])
def test_train_prefixes_give_every_train_target_once_with_its_full_prefix(window):
    """train_targets=prefixes (RecBole's training examples): for every train target s[p],
    1 <= p < len(s) - 2, one window ending at it whose inputs are its last ``window``
    predecessors; the datamodule trains the last position only."""
    from recsys.data.datamodule import TrainWindows

    seqs = _random_sequences(np.random.default_rng(window), 40, 25, 3, 30)
    sequences = _csr(seqs, 25)
    want = [_pad_left(s[:p + 1][-window - 1:], window + 1) for s in seqs for p in range(1, len(s) - 2)]
    prefixes = sequences.train_prefixes(window)
    assert prefixes.gather(sequences.items, np.arange(len(prefixes))).tolist() == want
    batch = TrainWindows(sequences.items, prefixes, last_only=True).__getitems__(list(range(len(prefixes))))
    assert batch["predict"][:, -1].all() and not batch["predict"][:, :-1].any()


def test_keep_last_13_gives_exactly_one_window_per_user():
    seqs = _random_sequences(np.random.default_rng(0), 50, 20, 5, 13)
    windows = _csr(seqs, 20).train_windows(10)
    assert len(windows) == 50


def test_train_popularity_counts_train_parts_only():
    seqs = [[1, 2, 3, 4], [2, 2, 5, 1, 3]]
    popularity = _csr(seqs, 6).train_popularity()
    assert popularity.tolist() == [0, 1, 3, 0, 0, 1, 0]


def test_from_parquet_reads_csr(tmp_path):
    seqs = [[3, 1, 2], [2, 2, 2, 1]]
    frame = pl.DataFrame({"user_id": [0, 0, 0, 1, 1, 1, 1], "item_id": sum(seqs, []),
                          "position": [0, 1, 2, 0, 1, 2, 3]})
    frame.write_parquet(tmp_path / "interactions.parquet")
    sequences = UserSequences.from_parquet(tmp_path / "interactions.parquet", 2, 3)
    assert sequences.offsets.tolist() == [0, 3, 7]
    assert [sequences.sequence(u).tolist() for u in range(2)] == seqs


def test_rejects_sequences_shorter_than_three():
    with pytest.raises(ValueError, match="at least 3"):
        _csr([[1, 2, 3], [1, 2]], 3)
