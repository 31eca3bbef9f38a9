"""EfficiencyCallback: the efficiency axis, measured the same way for every method.

Per run it records
- trainable / total parameters of the LightningModule (frozen encoders whose features are
  cached are not part of the model and are not counted);
- wall time of each training epoch, validation excluded (Lightning runs validation
  inside the training epoch, so its time is subtracted), and its median over the
  epochs after the first (the first pays warm-up and allocation);
- training sequences per second (windows of W+1 items) and seconds per optimiser step
  (what to compare when slow methods are timed over a fixed number of steps with
  `trainer.limit_train_batches`);
- peak memory: on CUDA `torch.cuda.max_memory_allocated`, reset at the start of each
  phase (train epoch, evaluation pass); on CPU the process's peak resident set size, reset
  per phase through Linux's /proc/self/clear_refs (VmHWM), so jobs of a multirun sweep in
  one process do not inherit each other's peak (elsewhere: the lifetime `ru_maxrss`);
- wall time of each evaluation pass (item tower over the whole catalogue + ranking), and
  inference latency: the item tower over the catalogue (from the pass's start to its first
  batch, i.e. the module's catalogue embedding; per item = that / N) and the median time of
  one user batch (user encoder + full ranking). Evaluation syncs the device per batch for
  these; training never does.

Figures go to every attached logger (W&B, CSV) as `efficiency/*` and are returned by
`summary()` for results.json. Training syncs the host once per epoch, never per batch.
The per-epoch records travel in the checkpoints (``state_dict``), so a resumed run reports
every epoch of the run, not only those of the last process.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        PROC_CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EfficiencyCallback(pl.Callback):
    """Collects time, throughput, memory and parameter counts; see the module docstring."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.sequences_per_second: list[float] = []
        self.eval_seconds: dict[str, list[float]] = {"val": [], "test": []}
        self.peak_train_bytes = 0
        self.peak_eval_bytes = 0
        self.trainable_params = 0
        self.total_params = 0
        self.item_tower_seconds: list[float] = []
        self.user_batch_seconds: list[float] = []
        self.eval_batch_size = 0
        self.num_items = 0
        self.memory_kind = ""
        self._batch_start: float | None = None
        self._epoch_train_peak: int | None = None
        self._epoch_start = 0.0
        self._eval_start = 0.0
        self._eval_in_epoch = 0.0
        self._sequences = 0
        self._steps = 0
        self.steps_per_epoch: list[int] = []
        self._restored: dict | None = None  # records of a checkpoint, applied when fit resumes

    # ---- helpers --------------------------------------------------------------------
    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def summary(self) -> dict[str, float | int | str | None]:
        """Run-level figures for results.json."""
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        throughput = self.sequences_per_second[1:] or self.sequences_per_second
        tower_s = statistics.median(self.item_tower_seconds) if self.item_tower_seconds else None
        return {
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "epochs": len(self.epoch_seconds),
            "s_per_epoch": statistics.median(steady) if steady else None,
            "epoch_seconds": list(self.epoch_seconds),
            "sequences_per_s": statistics.median(throughput) if throughput else None,
            "steps_per_epoch": self.steps_per_epoch[-1] if self.steps_per_epoch else None,
            "s_per_step": statistics.median(steady) / self.steps_per_epoch[-1] if steady else None,
            "peak_train_memory_bytes": self.peak_train_bytes,
            "peak_eval_memory_bytes": self.peak_eval_bytes,
            "memory_kind": self.memory_kind,
            "val_eval_s": statistics.median(self.eval_seconds["val"]) if self.eval_seconds["val"] else None,
            "test_eval_s": self.eval_seconds["test"][-1] if self.eval_seconds["test"] else None,
            "item_tower_s": tower_s,
            "item_latency_ms": None
            if tower_s is None or not self.num_items
            else 1e3 * tower_s / self.num_items,
            "user_batch_latency_ms": 1e3 * statistics.median(self.user_batch_seconds)
            if self.user_batch_seconds
            else None,
            "eval_batch_size": self.eval_batch_size,
        }

    #: What a checkpoint carries: the records of the epochs already trained.
    _STATE = ("epoch_seconds", "sequences_per_second", "steps_per_epoch", "eval_seconds",
              "peak_train_bytes", "peak_eval_bytes")

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores callback states for trainer.test(ckpt_path="best") too: keep
        # the records for a resumed fit only (on_train_start), never for a test pass.
        self._restored = {name: state_dict[name] for name in self._STATE}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, value in (self._restored or {}).items():
            setattr(self, name, value)
        self._restored = None

    # ---- hooks ----------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = list(pl_module.parameters())
        self.trainable_params = sum(p.numel() for p in params if p.requires_grad)
        self.total_params = sum(p.numel() for p in params)
        self.memory_kind = "cuda_max_allocated" if pl_module.device.type == "cuda" else "cpu_peak_rss"
        self._log(
            trainer,
            {
                "efficiency/trainable_params": self.trainable_params,
                "efficiency/total_params": self.total_params,
            },
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _reset_peak(pl_module.device)
        self._sequences = 0
        self._steps = 0
        self._eval_in_epoch = 0.0
        self._epoch_train_peak = None
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sequences += int(batch["items"].shape[0])
        self._steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        seconds = time.perf_counter() - self._epoch_start - self._eval_in_epoch
        peak = self._epoch_train_peak
        if peak is None:
            peak = _peak_memory_bytes(pl_module.device)
        self.peak_train_bytes = max(self.peak_train_bytes, peak)
        self.epoch_seconds.append(seconds)
        self.sequences_per_second.append(self._sequences / max(seconds, 1e-9))
        self.steps_per_epoch.append(self._steps)
        self._log(
            trainer,
            {
                "efficiency/epoch_s": seconds,
                "efficiency/sequences_per_s": self.sequences_per_second[-1],
                "efficiency/peak_train_memory_mb": peak / 2**20,
            },
        )

    def _eval_begin(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._epoch_train_peak is None:
            # validation inside a training epoch: keep the training peak, then reset
            self._epoch_train_peak = _peak_memory_bytes(pl_module.device)
        _reset_peak(pl_module.device)
        datamodule = getattr(trainer, "datamodule", None)
        self.num_items = int(getattr(datamodule, "num_items", 0) or 0)
        self._batch_start = None
        self._eval_start = time.perf_counter()

    def _eval_batch_start(self, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        now = time.perf_counter()
        if self._batch_start is None:  # first batch: the catalogue was just embedded
            self.item_tower_seconds.append(now - self._eval_start)
        self._batch_start = now

    def _eval_batch_end(self, pl_module: pl.LightningModule, batch: dict) -> None:
        _sync(pl_module.device)
        self.user_batch_seconds.append(time.perf_counter() - self._batch_start)
        self.eval_batch_size = max(self.eval_batch_size, int(batch["target"].shape[0]))

    def _eval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _sync(pl_module.device)
        seconds = time.perf_counter() - self._eval_start
        self._eval_in_epoch += seconds
        self.eval_seconds[stage].append(seconds)
        self.peak_eval_bytes = max(self.peak_eval_bytes, _peak_memory_bytes(pl_module.device))
        self._log(trainer, {f"efficiency/{stage}_eval_s": seconds})

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._eval_begin(trainer, pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch_start(pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._eval_batch_end(pl_module, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch_start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch_end(pl_module, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._eval_end(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._eval_begin(trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._eval_end(trainer, pl_module, "test")
