"""Data-efficient training: train on a deterministic fraction of the training data.

``subsample_train(sequences, Subsample(fraction, strategy, seed))`` maps the full training
parts (s[:-2] of every user, ``UserSequences.train_parts``) to the kept ones. It runs after
the leave-one-out protocol and touches only the training parts: validation and test are
built from the whole sequences, so they are the full sets, a user dropped from training is
still evaluated with their full history as input, and no val/test target is ever trained on.

Fraction f in (0, 1]; f = 1 keeps everything (exactly the batches of a run without
subsample). T = the training users, those with at least one training target (a train part
of at least 2 items); users without one are left as they are. Strategies:

- ``random_users``: round(f·T) training users (at least 1), uniformly without replacement
  (numpy ``default_rng(seed)``); a kept user keeps their whole train part, a dropped one
  none of it.
- ``recent``: every user keeps the last max(ceil(f·L), 2) of their L >= 2 training
  interactions: the most recent ones, and at least one target. Earlier interactions are
  neither targets nor inputs of any training window. Needs no randomness (seed unused).
- ``popularity_stratified``: the training users ranked by the mean training popularity of
  their training items (ties by user id) and cut into ``STRATA`` equal-size strata
  (deciles, ``popularity_strata``); each stratum keeps floor or ceil of f times its size,
  uniformly at random, by largest remainder so that the total is round(f·T) as with
  ``random_users``. The kept users have the popularity profile of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.sequences import TrainParts, UserSequences

STRATEGIES = ("random_users", "recent", "popularity_stratified")
STRATA = 10
MIN_TRAIN_PART = 2  # one input and one target


@dataclass(frozen=True)
class Subsample:
    """What to train on: ``fraction`` in (0, 1] of the training data, chosen by ``strategy``
    (``STRATEGIES``, module doc), randomly from ``seed``."""

    fraction: float = 1.0
    strategy: str = "random_users"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"subsample fraction {self.fraction!r} must lie in (0, 1]")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"subsample strategy {self.strategy!r} not in {STRATEGIES}")


def subsample_train(sequences: UserSequences, spec: Subsample) -> TrainParts:
    """The training parts ``spec`` keeps of ``sequences``' full ones (module doc)."""
    full = sequences.train_parts()
    if spec.strategy == "recent":
        lengths = full.lengths
        # 1e-9: an f·L that is an integer in exact arithmetic is not rounded up past it
        keep = np.maximum(np.ceil(spec.fraction * lengths - 1e-9).astype(np.int64),
                          np.minimum(lengths, MIN_TRAIN_PART))
        return TrainParts(full.ends - keep, full.ends)
    users = np.flatnonzero(full.targets > 0)
    strata = [users] if spec.strategy == "random_users" else popularity_strata(sequences, users)
    rng = np.random.default_rng(spec.seed)
    quotas = stratum_quotas(np.array([len(s) for s in strata]), spec.fraction)
    kept = np.concatenate([rng.choice(s, q, replace=False) for s, q in zip(strata, quotas, strict=True)])
    dropped = np.setdiff1d(users, kept)
    ends = full.ends.copy()
    ends[dropped] = full.starts[dropped]
    return TrainParts(full.starts, ends)


def popularity_strata(sequences: UserSequences, users: np.ndarray) -> list[np.ndarray]:
    """``users`` (int64 [T]) ranked by the mean full training popularity of their training
    items, ties by user id, split into ``STRATA`` equal-size strata (sizes differ by at most
    one), least popular first: a list of int64 arrays."""
    parts = sequences.train_parts()
    popularity = sequences.train_popularity(parts)
    owner = np.repeat(np.arange(sequences.num_users), parts.lengths)
    total = np.bincount(owner, weights=popularity[sequences.items[parts.positions()]],
                        minlength=sequences.num_users)
    mean = total / np.maximum(parts.lengths, 1)
    return np.array_split(users[np.lexsort((users, mean[users]))], STRATA)


def stratum_quotas(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """int64 [S] users to keep per stratum of ``sizes`` (int [S]): floor or ceil of
    ``fraction`` times each size, summing to round(fraction·sum) (at least 1, at most the
    sum); the strata with the largest remainders round up (ties: the earlier stratum)."""
    shares = fraction * sizes
    quotas = np.floor(shares).astype(np.int64)
    total = min(int(sizes.sum()), max(1, int(np.floor(fraction * sizes.sum() + 0.5))))
    quotas[np.argsort(quotas - shares, kind="stable")[: total - quotas.sum()]] += 1
    return quotas
