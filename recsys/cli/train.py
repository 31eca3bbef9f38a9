"""recsys-train: fit one method on one dataset, test at the best validation epoch.

    recsys-train experiment=demo
    recsys-train -m experiment=iisan_scientific_text seed=0,1,2
    recsys-train adapter=id data=scientific encoder/image=none logger=csv
    recsys-train experiment=demo adapter=id distill=kd distill.teacher=<a run dir>

Writes `<run dir>/results.json` (see recsys.train.results) whether the run completes or
fails, prints a summary table, and returns the best validation value of `eval.monitor`
(the objective for Hydra sweepers).
"""

from __future__ import annotations

import logging
import signal
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from recsys.adapters.modality_mask import evaluating_with
from recsys.atomic_io import write_json_atomic
from recsys.cli import CONFIG_PATH, refusals_exit
from recsys.cli.prepare import prepare_inputs
from recsys.config.schema import check_config, job_config
from recsys.eval.popularity import evaluate_popularity
from recsys.train.builders import (
    build_callbacks,
    build_datamodule,
    build_item_source,
    build_loggers,
    build_module,
)
from recsys.train.checkpoint_io import AtomicCheckpointIO, load_checkpoint
from recsys.train.cost import measure_costs
from recsys.train.distill import load_teacher, student_alone, teacher_costs
from recsys.train.efficiency import EfficiencyCallback
from recsys.train.modality_eval import check_prunable, metrics_by_modalities, prune_by_gates
from recsys.train.results import format_summary
from recsys.train.run_dir import (
    RunDirError,
    checkpoint_files,
    checkpoint_record,
    completed_results,
    inputs_changes,
    locked,
    resume_point,
)

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """SIGTERM / SIGINT during a run (a BaseException: nothing on the way may swallow it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT raise ``RunInterrupted`` (main thread only;
    Lightning's own SIGTERM handler still runs first, then calls this one)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    try:
        previous = {s: signal.signal(s, interrupt) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _floats(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Lightning's validate/test return value -> {"hr@10": 0.1, ...} without stage prefix."""
    merged = {k: float(v) for m in metrics for k, v in m.items()}
    return {k.split("/", 1)[1]: v for k, v in merged.items() if "/" in k}


def _finish_wandb() -> None:
    """One W&B run per job: close it even when a multirun goes on in this process."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def _continue_wandb_run(cfg: DictConfig) -> None:
    """A resumed run (``ckpt_path``) logs into the W&B run of the checkpoint's config."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not cfg.ckpt_path or wandb_cfg is None:
        return
    saved = load_checkpoint(cfg.ckpt_path).get("hyper_parameters") or {}
    saved_id = ((saved.get("logger") or {}).get("wandb") or {}).get("id")
    if saved_id and saved_id != wandb_cfg.id:
        log.info("resuming W&B run %s of %s", saved_id, cfg.ckpt_path)
        wandb_cfg.id = saved_id


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job from a composed config and return its results record.

    The config is checked first (``ConfigError`` before any work). The run directory is then
    locked for this process (``LockedError`` if another one writes it); with
    ``skip_complete``, a job already complete there is not run again; a run already there
    without ``ckpt_path`` is continued, refused or replaced per ``existing_run``
    (``recsys.train.run_dir``; ``RunDirError``). None of these refusals writes anything.
    """
    check_config(cfg, "train")
    out_dir = Path(cfg.paths.output_dir)
    rank = rank_zero_only.rank
    with locked(out_dir, rank):
        config = job_config(cfg)  # before ckpt_path is chosen below
        if cfg.get("skip_complete") and (done := completed_results(out_dir, config)) is not None:
            log.info("skipping %s: already complete with this config (skip_complete=true)", out_dir)
            print(format_summary(done))
            return done
        files = checkpoint_files(config.get("callbacks"))
        if not cfg.ckpt_path:
            cfg.ckpt_path = resume_point(out_dir, config, files, cfg.existing_run, rank)
        _continue_wandb_run(cfg)
        return _train_locked(cfg, out_dir, files)


def _train_locked(cfg: DictConfig, out_dir: Path, files: dict[str, Path]) -> dict[str, Any]:
    """``train`` once the run directory is this process's: results.json however it ends."""
    results: dict[str, Any] = {
        "status": "failed",
        "method": cfg.label,
        "adapter": cfg.adapter.name,
        "dataset": cfg.data.name,
        "seed": int(cfg.seed),
        "metrics": {"val": None, "test": None, "test_by_modalities": None},
        "pruning": None,
        "baselines": {},
        "efficiency": {},
        "data_subsample": None,
        "distill": None,
        "inputs": None,
        "checkpoints": {},
        "error": None,
        "signal": None,
        "config": job_config(cfg),
    }
    try:
        with stop_signals_raise():
            _run(cfg, results)
    except (RunInterrupted, SIGTERMException) as stop:
        results["status"] = "interrupted"
        results["signal"] = signal.Signals(getattr(stop, "signum", signal.SIGTERM)).name
        raise
    except Exception:
        results["error"] = traceback.format_exc()
        raise
    finally:
        if rank_zero_only.rank == 0:  # DDP: one results.json, written by the global rank 0
            results["checkpoints"] = checkpoint_record(out_dir, files)
            write_json_atomic(out_dir / "results.json", results)
        _finish_wandb()
    if rank_zero_only.rank == 0:
        print(format_summary(results))
        log.info("results: %s", out_dir / "results.json")
    return results


def _run(cfg: DictConfig, results: dict[str, Any]) -> None:
    """Prepare, fit (with ``distill.teacher``: against that teacher, ``recsys.train.distill``),
    test at the best checkpoint (also per modality subset and after gate pruning,
    ``recsys.train.modality_eval``), popularity baseline, efficiency (timed, and counted by
    ``recsys.train.cost``; the teacher's counted apart): into ``results``."""
    if cfg.prepare:
        prepare_inputs(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    dm = build_datamodule(cfg)
    results["data_subsample"] = dm.subsample_stats
    source, cache_facts = build_item_source(cfg, dm)
    results["inputs"] = {
        "data_fingerprint": dm.data_fingerprint,
        "cache_fingerprints": cache_facts.pop("cache_fingerprints", {}),
    }
    same_features_as = cache_facts.pop("cache_same_features_as", {})
    if cfg.ckpt_path and (changed := inputs_changes(load_checkpoint(cfg.ckpt_path), results["inputs"],
                                                    same_features_as)):
        raise RunDirError(
            f"{cfg.ckpt_path} was trained on other data or caches than this job's:\n  "
            + "\n  ".join(changed) + "\nstart a fresh run (another hydra.run.dir) on today's data"
        )
    module = build_module(cfg, dm, source, inputs=results["inputs"])
    threshold = (cfg.get("prune") or {}).get("gate_threshold")
    if threshold is not None:
        check_prunable(module.model.item_tower)
    if cfg.distill.get("teacher"):
        module.teacher = load_teacher(cfg.distill, dm)
        results["distill"] = module.teacher.record()
    callbacks = build_callbacks(cfg)
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
    optimizer = trainer.optimizers[0] if trainer.optimizers else None  # its state is counted

    best = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path else None
    for stage, run in (("val", trainer.validate), ("test", trainer.test)):
        results["metrics"][stage] = _floats(run(module, datamodule=dm, ckpt_path=best, verbose=False))

    def test_with(modalities: list[str] | None) -> dict[str, float]:
        """Test at the best checkpoint with ``modalities`` only, unseen by the loggers (their
        test/* stay the run's own test)."""
        loggers, trainer.loggers = trainer.loggers, []
        try:
            with evaluating_with(module, modalities):
                return _floats(trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False))
        finally:
            trainer.loggers = loggers

    subsets = cfg.eval.get("modality_subsets")
    results["metrics"]["test_by_modalities"] = metrics_by_modalities(test_with, subsets)
    results["pruning"] = prune_by_gates(module, results["metrics"], threshold, test_with)
    results["baselines"]["popularity"] = {
        "test": evaluate_popularity(
            dm, ks=tuple(cfg.eval.ks), tie_policy=cfg.eval.tie_policy,
            mask_target=cfg.eval.mask_target_in_history,
        )
    }
    efficiency = next((c for c in callbacks if isinstance(c, EfficiencyCallback)), None)
    train_batch = next(iter(dm.train_dataloader()))
    with student_alone(module.to(trainer.strategy.root_device)):  # the student's own figures
        costs = measure_costs(module, train_batch, next(iter(dm.test_dataloader())), optimizer,
                              step_context=trainer.precision_plugin.train_step_context)
    if module.teacher is not None:
        costs |= teacher_costs(module, train_batch)
    results["efficiency"] = (efficiency.summary() if efficiency else {}) | cache_facts | costs
    results["status"] = "complete"
    for logger in loggers:
        logger.log_metrics(_final_metrics(results))
        logger.save()  # the CSV logger writes what it holds only here (fit's own save is over)


def _final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """What the loggers get once a run is complete: ``summary/<efficiency figure>``, the test
    metrics per modality subset (``test_by_modalities/<subset>/<metric>``) and after gate pruning
    (``pruned/test/<metric>``), so a sweep's W&B / CSV records hold what results.json does."""
    logged = {f"summary/{k}": v for k, v in results["efficiency"].items() if isinstance(v, (int, float))}
    for subset, metrics in (results["metrics"]["test_by_modalities"] or {}).items():
        logged |= {f"test_by_modalities/{subset}/{k}": v for k, v in metrics.items()}
    if results["pruning"] is not None:
        logged |= {f"pruned/test/{k}": v for k, v in results["pruning"]["test"].items()}
    return logged


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@refusals_exit
def main(cfg: DictConfig) -> float | None:
    try:
        results = train(cfg)
    except (RunInterrupted, SIGTERMException) as stop:  # the shell's convention: 128 + signal
        raise SystemExit(128 + getattr(stop, "signum", signal.SIGTERM)) from None
    return results["metrics"]["val"].get(cfg.eval.monitor.split("/", 1)[1])


if __name__ == "__main__":
    main()
