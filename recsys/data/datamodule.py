"""SequenceDataModule: train / val / test loaders over a processed dataset.

Batches are collated by indexing preallocated int arrays once per batch (datasets
implement ``__getitems__``, which the DataLoader calls with a whole batch of indices):
- train: ``{"items": LongTensor [B, window+1]}`` left-padded with 0, shuffled windows;
- val/test: ``{"inputs": LongTensor [B, window], "target": LongTensor [B],
  "history": LongTensor [B, H] (0-padded), "user": LongTensor [B]}``, every user exactly
  once, in user order, no padding or repetition.

Training data: the windows (or prefixes) of the training parts a ``Subsample``
(``recsys.data.subsample``) keeps, all of them by default; validation and test always cover
every user with their full sequence. ``subsample_stats`` counts what was kept (logged).

Training order: a seeded ``DistributedSampler`` (one replica when not distributed) draws
the permutation of epoch e from (seed, e); Lightning calls its ``set_epoch``, so a run
resumed from a checkpoint sees exactly the batches the uninterrupted run saw.

Distributed (DDP, ``trainer=ddp``): the loaders shard themselves when a process group with
more than one process is initialised (the trainer config sets
``use_distributed_sampler: false`` so Lightning does not substitute its own sampler, whose
evaluation shards are padded with repeated users). Training: the sampler above with one
replica per process. Evaluation: rank r of w gets the contiguous users
``[r·U/w, (r+1)·U/w)``, so every user is ranked exactly once over all ranks and the
sum-reduced metrics equal the single-process ones.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from recsys.data.processed import ProcessedDataset
from recsys.data.sequences import EvalSplit, TrainParts, UserSequences, WindowIndex
from recsys.data.subsample import Subsample, subsample_train

TRAIN_TARGETS = ("windows", "prefixes")
log = logging.getLogger(__name__)


def _as_batch(batch):
    """Identity collate: ``__getitems__`` already returns a collated batch."""
    return batch


def _process_group() -> tuple[int, int] | None:
    """(rank, world size) when running distributed with more than one process, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


class EvalShard(Sampler[int]):
    """Contiguous, unpadded shard of ``range(n)`` for ``rank`` of ``world`` processes: every
    index belongs to exactly one shard (shards differ in size by at most one)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.start, self.stop = rank * n // world, (rank + 1) * n // world

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


class TrainWindows(Dataset):
    """Training windows; ``dataset.__getitems__(indices)`` -> ``{"items": [B, window+1],
    "predict": [B, window] bool}``: which positions are trained (their input and target are
    real items; with ``last_only``, the last position alone: one target per window)."""

    def __init__(self, flat: np.ndarray, windows: WindowIndex, last_only: bool = False):
        self.flat, self.windows, self.last_only = flat, windows, last_only

    def __len__(self) -> int:
        return len(self.windows)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        items = torch.from_numpy(self.windows.gather(self.flat, rows)).long()
        predict = (items[:, :-1] != 0) & (items[:, 1:] != 0)
        if self.last_only:
            predict[:, :-1] = False
        return {"items": items, "predict": predict}


class EvalExamples(Dataset):
    """Validation/test examples; ``__getitems__(indices)`` -> inputs/target/history/user."""

    def __init__(self, flat: np.ndarray, split: EvalSplit):
        self.flat, self.split = flat, split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        arrays = self.split.batch(self.flat, rows)
        return {name: torch.from_numpy(array).long() for name, array in arrays.items()}


class SequenceDataModule(pl.LightningDataModule):
    """Leave-one-out loaders over ``<processed_dir>`` (built by ``recsys-prep``).

    Args:
        processed_dir: directory with items/users/interactions parquet + stats.json.
        window: input length (train windows hold ``window + 1`` items).
        batch_size: training windows per batch.
        eval_batch_size: users per validation/test batch.
        num_workers: DataLoader workers.
        seed: seed of the training shuffle (epoch e's permutation depends on seed and e only).
        train_targets: ``windows`` (the reference: disjoint windows, every position a
            target) | ``prefixes`` (one window per train target, ending at it: the target
            seen with its full prefix, as RecBole trains; about ``window`` times the batches).
        subsample: which training data to train on (default: all of it).

    Attributes (available after ``setup()``, or on first access):
        num_items (N), num_users (U), train_popularity (torch float32 [N+1], over the kept
        training parts), items (polars frame of items.parquet), fingerprint (sha256 hex of
        the items), data_fingerprint (sha256 hex of items, users and interactions),
        train_parts (the kept ``TrainParts``), subsample_stats (``{"fraction", "strategy",
        "seed", "kept": counts, "full": counts}``, counts = ``{"users", "targets",
        "interactions", "sequences"}``: training users with a target, training targets,
        training interactions, training windows (or prefixes) = training dataset rows).
    """

    def __init__(
        self,
        processed_dir: str | Path,
        window: int = 10,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        train_targets: str = "windows",
        subsample: Subsample | None = None,
    ):
        super().__init__()
        self.processed_dir = Path(processed_dir)
        self.window = window
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        if train_targets not in TRAIN_TARGETS:
            raise ValueError(f"train_targets {train_targets!r} not in {TRAIN_TARGETS}")
        self.train_targets = train_targets
        self.subsample = subsample or Subsample()
        self._dataset: ProcessedDataset | None = None
        self._sequences: UserSequences | None = None
        self._train_parts: TrainParts | None = None
        self._subsample_stats: dict | None = None
        self._fingerprint: str | None = None
        self._data_fingerprint: str | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load and validate the processed dataset, build the CSR sequences and the kept
        training parts, and log what was kept (once)."""
        if self._dataset is None:
            self._dataset = ProcessedDataset.load(self.processed_dir)
            self._sequences = UserSequences.from_interactions(
                self._dataset.interactions, self._dataset.num_users, self._dataset.num_items
            )
            self._train_parts = subsample_train(self._sequences, self.subsample)
            kept, full = self._counts(self._train_parts), self._counts(self._sequences.train_parts())
            self._subsample_stats = {**asdict(self.subsample), "kept": kept, "full": full}
            log.info("training data (subsample %s): %s", asdict(self.subsample),
                     ", ".join(f"{kept[k]} of {full[k]} {k}" for k in full))

    def _counts(self, parts: TrainParts) -> dict[str, int]:
        """``TrainParts.counts()`` and ``sequences``, the training dataset's rows over ``parts``."""
        return {**parts.counts(), "sequences": len(self._train_index(parts))}

    def _train_index(self, parts: TrainParts) -> WindowIndex:
        """The training windows (``windows``) or prefixes (``prefixes``) over ``parts``."""
        sequences = self._sequences
        build = sequences.train_prefixes if self.train_targets == "prefixes" else sequences.train_windows
        return build(self.window, parts)

    @property
    def dataset(self) -> ProcessedDataset:
        self.setup()
        return self._dataset

    @property
    def sequences(self) -> UserSequences:
        self.setup()
        return self._sequences

    @property
    def train_parts(self) -> TrainParts:
        self.setup()
        return self._train_parts

    @property
    def subsample_stats(self) -> dict:
        self.setup()
        return self._subsample_stats

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @property
    def num_users(self) -> int:
        return self.dataset.num_users

    @property
    def items(self) -> polars.DataFrame:
        return self.dataset.items

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.dataset.fingerprint()
        return self._fingerprint

    @property
    def data_fingerprint(self) -> str:
        """The processed dataset's ``content_fingerprint()``: what a run records it was trained on."""
        if self._data_fingerprint is None:
            self._data_fingerprint = self.dataset.content_fingerprint()
        return self._data_fingerprint

    @property
    def train_popularity(self) -> torch.Tensor:
        return torch.from_numpy(self.sequences.train_popularity(self.train_parts)).float()

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world = _process_group() or (0, 1)
        sampler: Sampler | None = None
        if shuffle:  # the permutation is a function of (seed, epoch): a resumed run replays it
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=self.seed)
        elif world > 1:
            sampler = EvalShard(len(dataset), rank, world)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_as_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        windows = self._train_index(self.train_parts)
        dataset = TrainWindows(self.sequences.items, windows, last_only=self.train_targets == "prefixes")
        return self._loader(dataset, self.batch_size, True)

    def _eval_loader(self, stage: str) -> DataLoader:
        split = self.sequences.eval_split(stage, self.window)
        return self._loader(EvalExamples(self.sequences.items, split), self.eval_batch_size, False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
