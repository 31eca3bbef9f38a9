"""UserSequences: every user's chronological item sequence as CSR arrays, and the
leave-one-out splits built from them as index arrays (no per-row Python objects).

For a user sequence s of length n >= 3 (see docs/architecture.md):
- train part s[:-2]; training windows of ``window + 1`` items end at len(s[:-2]),
  len - window, len - 2*window, ... (while >= 2 items remain), left-padded with 0, so every
  train target s[1:-2] is predicted exactly once, from the items before it in its window
  (the reference); or ``train_prefixes``: one window per train target, ending at it, so
  each target is predicted once from its full prefix (up to ``window`` items; RecBole's);
- validation: input s[-2-window:-2] (left-padded), target s[-2], history s[:-2];
- test: input s[-1-window:-1] (left-padded), target s[-1], history s[:-1].
History rows hold the items before the target, right-padded with 0, the target's own
earlier occurrences included: the evaluator decides whether a repeated target is masked
(``eval.mask_target_in_history``).

Training windows, prefixes and popularity are built over ``TrainParts``: each user's
training interactions as a span of the flat array, s[:-2] unless a subsample
(``recsys.data.subsample``) shortened or emptied it; validation and test never depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

EVAL_HOLDOUT = {"val": 2, "test": 1}  # items after the input window's end


@dataclass(frozen=True)
class WindowIndex:
    """Fixed-length windows into a flat item array.

    Attributes:
        starts: int64 [W], the position where the window's user begins in the flat array
            (positions before it are padding).
        ends: int64 [W], exclusive end position of each window.
        length: items per window; window w covers flat[ends[w] - length : ends[w]].
    """

    starts: np.ndarray
    ends: np.ndarray
    length: int

    def __len__(self) -> int:
        return len(self.ends)

    def gather(self, flat: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Windows ``rows`` (int [B]) as int32 [B, length], left-padded with 0."""
        ends = self.ends[rows]
        positions = ends[:, None] - self.length + np.arange(self.length)
        valid = positions >= self.starts[rows][:, None]
        return np.where(valid, flat[np.maximum(positions, 0)], 0).astype(np.int32)


@dataclass(frozen=True)
class EvalSplit:
    """Validation or test examples, one per user, in user order.

    Attributes:
        users: int64 [U] user ids.
        inputs: WindowIndex of length ``window`` ending just before each target.
        targets: int32 [U] target item ids.
        history_ends: int64 [U] exclusive end of each user's history in the flat array
            (history = flat[inputs.starts[u] : history_ends[u]]).
    """

    users: np.ndarray
    inputs: WindowIndex
    targets: np.ndarray
    history_ends: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def batch(self, flat: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Examples ``rows`` (int [B]) as arrays: ``inputs`` int32 [B, window], ``target``
        int32 [B], ``history`` int32 [B, H] (H = longest history in the batch, 0-padded),
        ``user`` int64 [B]."""
        starts, ends = self.inputs.starts[rows], self.history_ends[rows]
        target = self.targets[rows]
        width = int((ends - starts).max()) if len(rows) else 0
        positions = starts[:, None] + np.arange(width)
        history = np.where(positions < ends[:, None], flat[np.minimum(positions, len(flat) - 1)],
                           0)
        return {
            "inputs": self.inputs.gather(flat, rows),
            "target": target,
            "history": history.astype(np.int32),
            "user": self.users[rows],
        }


@dataclass(frozen=True)
class TrainParts:
    """Each user's training interactions: ``flat[starts[u]:ends[u]]``, chronological.

    Attributes:
        starts: int64 [U] first position (windows are left-padded before it).
        ends: int64 [U] exclusive end; ``ends == starts``: the user is not trained on.
    """

    starts: np.ndarray
    ends: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """int64 [U] training interactions per user."""
        return self.ends - self.starts

    @property
    def targets(self) -> np.ndarray:
        """int64 [U] training targets per user: every item after the first."""
        return np.maximum(self.lengths - 1, 0)

    def positions(self) -> np.ndarray:
        """int64 [sum(lengths)] flat positions of every training interaction, by user."""
        lengths = self.lengths
        first_of_user = np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(self.starts, lengths) + np.arange(lengths.sum()) - first_of_user

    def counts(self) -> dict[str, int]:
        """``users`` (with at least one training target), ``targets``, ``interactions``."""
        targets = self.targets
        return {"users": int((targets > 0).sum()), "targets": int(targets.sum()),
                "interactions": int(self.lengths.sum())}


class UserSequences:
    """All user sequences in CSR form.

    Args:
        offsets: int64 [U+1]; user u's items are ``items[offsets[u]:offsets[u+1]]``.
        items: int32 [nnz] item ids in 1..num_items, chronological within each user.
        num_items: N (item ids 1..N; 0 is padding).
    """

    def __init__(self, offsets: np.ndarray, items: np.ndarray, num_items: int):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int32)
        self.num_items = int(num_items)
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.items):
            raise ValueError("offsets must start at 0 and end at len(items)")
        if (self.lengths < 3).any():
            raise ValueError("leave-one-out needs at least 3 items per user")

    @classmethod
    def from_interactions(
        cls, interactions: pl.DataFrame, num_users: int, num_items: int
    ) -> UserSequences:
        """From an interactions frame [user_id, item_id, ...] sorted by (user_id, position)."""
        user_ids = interactions["user_id"].to_numpy()
        if len(user_ids) and (np.diff(user_ids) < 0).any():
            raise ValueError("interactions must be sorted by (user_id, position)")
        offsets = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(user_ids, minlength=num_users), out=offsets[1:])
        return cls(offsets, interactions["item_id"].to_numpy(), num_items)

    @classmethod
    def from_parquet(cls, path: Path | str, num_users: int, num_items: int) -> UserSequences:
        """From ``interactions.parquet`` (reads only user_id and item_id)."""
        return cls.from_interactions(
            pl.read_parquet(path, columns=["user_id", "item_id"]), num_users, num_items
        )

    @property
    def num_users(self) -> int:
        """U."""
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64 [U] sequence lengths."""
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """int32 [n] items of one user (a view)."""
        return self.items[self.offsets[user]:self.offsets[user + 1]]

    def train_parts(self) -> TrainParts:
        """The full training parts s[:-2] of every user."""
        return TrainParts(self.offsets[:-1], self.offsets[1:] - 2)

    def train_windows(self, window: int, parts: TrainParts | None = None) -> WindowIndex:
        """Training windows of ``window + 1`` items over the train parts (module doc; default
        ``train_parts()``). Windows are ordered by user, then from the part's end backwards."""
        parts = parts if parts is not None else self.train_parts()
        lengths = parts.lengths
        per_user = np.where(lengths >= 2, (lengths - 2) // window + 1, 0)
        users = np.repeat(np.arange(self.num_users), per_user)
        first_of_user = np.repeat(np.cumsum(per_user) - per_user, per_user)
        steps_back = np.arange(len(users)) - first_of_user
        return WindowIndex(parts.starts[users], parts.ends[users] - steps_back * window, window + 1)

    def train_prefixes(self, window: int, parts: TrainParts | None = None) -> WindowIndex:
        """One window of ``window + 1`` items per train target (every item of a train part
        but its first; default ``train_parts()``), ending at it: inputs are its last
        ``window`` predecessors within the part. Ordered by user, then position."""
        parts = parts if parts is not None else self.train_parts()
        per_user = parts.targets
        users = np.repeat(np.arange(self.num_users), per_user)
        first_of_user = np.repeat(np.cumsum(per_user) - per_user, per_user)
        target_index = np.arange(len(users)) - first_of_user + 1
        starts = parts.starts[users]
        return WindowIndex(starts, starts + target_index + 1, window + 1)

    def eval_split(self, stage: str, window: int) -> EvalSplit:
        """Validation (``stage="val"``) or test (``"test"``) examples, one per user."""
        holdout = EVAL_HOLDOUT[stage]
        target_positions = self.offsets[1:] - holdout
        return EvalSplit(
            users=np.arange(self.num_users, dtype=np.int64),
            inputs=WindowIndex(self.offsets[:-1], target_positions, window),
            targets=self.items[target_positions],
            history_ends=target_positions,
        )

    def train_popularity(self, parts: TrainParts | None = None) -> np.ndarray:
        """float64 [N+1]: how often each item occurs in the train parts (default
        ``train_parts()``, s[:-2]); index 0 = 0."""
        parts = parts if parts is not None else self.train_parts()
        counts = np.bincount(self.items[parts.positions()], minlength=self.num_items + 1)
        counts[0] = 0
        return counts.astype(np.float64)
