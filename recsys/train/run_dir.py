"""One run directory, one run: its lock, what happens to a run already there, its checkpoint record.

A ``recsys-train`` run directory (``hydra.run.dir``) holds exactly one model lineage:

- **lock**: the training process holds ``<run dir>/.lock`` (``recsys.locking``) from before
  it reads anything there until ``results.json`` is written; a second process started on the
  same directory stops at once with ``LockedError`` and writes nothing (exit status 2).
- **a run already there** (checkpoints in ``checkpoints/``, no ``ckpt_path`` given) is
  handled by ``existing_run``:
  ``resume`` (default) continues it from ``last.ckpt`` when the checkpoint's config is this
  job's config (the keys in ``RUN_CONTROL_KEYS`` aside, and ``ADDED_KEYS`` a saved config
  predates where this job keeps their old behaviour) and the run did not complete, and
  refuses otherwise, naming each differing key; ``refuse`` refuses any; ``overwrite``
  deletes what the old run wrote (``DISCARDED_ON_OVERWRITE``) and starts afresh. Checkpoints
  are never versioned (``best-v1.ckpt``): ``best.ckpt`` and ``last.ckpt`` are this run's.
- **record**: ``results.json`` names each checkpoint file with its sha256
  (``checkpoint_record``); ``recsys-eval`` / ``recsys-export`` load exactly that file and
  refuse one whose content changed since (``recorded_checkpoint``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from recsys.cache.file_fingerprint import file_sha256
from recsys.config.differences import differences, flatten
from recsys.errors import Refused
from recsys.locking import exclusive
from recsys.train.checkpoint_io import load_checkpoint

log = logging.getLogger(__name__)

EXISTING_RUN = ("resume", "refuse", "overwrite")
#: Job config keys that steer a run without changing the model it trains.
RUN_CONTROL_KEYS = ("ckpt_path", "skip_complete", "existing_run", "prepare", "logger")
#: Config keys added after runs were made, each with the value that does what runs did before
#: it existed. A saved config without the key is the same run as a job with that value, so a
#: framework upgrade does not make every earlier run unresumable and unskippable. Add a line
#: with every new key whose default keeps the old behaviour.
ADDED_KEYS: dict[str, Any] = {
    "adapter.modality_dropout": 0.0,
    "eval.modalities": None,
    "eval.modality_subsets": None,
    "prune.gate_threshold": None,
}
#: What ``existing_run=overwrite`` deletes: everything a run writes that names its model.
DISCARDED_ON_OVERWRITE = ("checkpoints", "results.json", "eval.json", "export")
LAST = "last"


class RunDirError(Refused):
    """A run directory cannot be used as asked (another run's checkpoints, a changed
    checkpoint, changed inputs, not a run directory); the message says what to do."""


def locked(out_dir: Path, rank: int) -> AbstractContextManager:
    """The run directory's lock for the global rank 0 (other DDP ranks join rank 0's run)."""
    return exclusive(out_dir / ".lock", f"run directory {out_dir}") if rank == 0 else nullcontext()


def checkpoint_files(callbacks: Mapping[str, Any] | None) -> dict[str, Path]:
    """``{"best": <dirpath>/<filename>.ckpt, "last": <dirpath>/last.ckpt}`` of the
    ``model_checkpoint`` callback config (empty without one)."""
    node = (callbacks or {}).get("model_checkpoint")
    if not node:
        return {}
    files = {"best": Path(node["dirpath"]) / f"{node.get('filename') or 'best'}.ckpt"}
    if node.get("save_last"):
        files[LAST] = Path(node["dirpath"]) / f"{LAST}.ckpt"
    return files


def checkpoint_record(out_dir: Path, files: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    """``{"best": {"file": "checkpoints/best.ckpt", "sha256": ...}, ...}`` for the files that
    exist (paths relative to ``out_dir`` when inside it)."""
    record = {}
    for name, path in files.items():
        if path.is_file():
            shown = path.relative_to(out_dir) if path.is_relative_to(out_dir) else path
            record[name] = {"file": str(shown), "sha256": file_sha256(path)}
    return record


def recorded_checkpoint(run_dir: Path, results: Mapping[str, Any], name: str) -> Path:
    """The checkpoint ``name`` (best | last) that ``results.json`` records, verified by hash.

    Raises:
        RunDirError: not recorded, missing, or its content is not what results.json reports.
    """
    entry = (results.get("checkpoints") or {}).get(name)
    where = run_dir / "results.json"
    if entry is None:
        raise RunDirError(
            f"{where} records no {name!r} checkpoint (recorded: {sorted(results.get('checkpoints') or {})}); "
            "pass checkpoint=<path to a .ckpt> to evaluate a file of your choice"
        )
    path = run_dir / entry["file"]
    if not path.is_file():
        raise RunDirError(f"{path}, the {name!r} checkpoint {where} reports, is missing")
    found = file_sha256(path)
    if found != entry["sha256"]:
        raise RunDirError(
            f"{path} is not the {name!r} checkpoint {where} reports (sha256 {found[:12]}..., recorded "
            f"{entry['sha256'][:12]}...): it was replaced after the run. Pass checkpoint={path} to use "
            "it anyway, knowing results.json does not describe it"
        )
    return path


def config_changes(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """What differs between a run's saved config and this job's, ``RUN_CONTROL_KEYS`` aside, and
    the ``ADDED_KEYS`` the saved config predates while this job keeps their old behaviour
    (empty: the same run)."""
    kept = [{k: v for k, v in c.items() if k not in RUN_CONTROL_KEYS} for c in (saved, config)]
    saved_keys, job = flatten(kept[0]), flatten(kept[1])
    predates = {key for key, old in ADDED_KEYS.items()
                if key not in saved_keys and key in job and job[key] == old}
    return [line for line in differences(*kept, labels=("saved", "this job"))
            if line.split(":", 1)[0] not in predates]


def inputs_changes(checkpoint: Mapping[str, Any], inputs: Mapping[str, Any],
                   same_features_as: Mapping[str, Any] | None = None) -> list[str]:
    """What differs between the data / cache fingerprints a checkpoint was trained on
    (``checkpoint["inputs"]``) and ``inputs`` (empty: the same, or not recorded). A recorded
    cache fingerprint among ``same_features_as[modality]`` (earlier builds of the same
    features as today's cache: recsys/cache/manifest.py) is today's."""
    trained_on = checkpoint.get("inputs")
    if not trained_on:
        return []
    today = inputs.get("cache_fingerprints") or {}
    caches = {m: today[m] if fp in (same_features_as or {}).get(m, ()) else fp
              for m, fp in (trained_on.get("cache_fingerprints") or {}).items()}
    if "cache_fingerprints" in trained_on:
        trained_on = {**trained_on, "cache_fingerprints": caches}
    return differences(trained_on, inputs, labels=("trained on", "now"))


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """``<run_dir>/results.json``, or None when the run never wrote one (not yet, or killed).

    Raises:
        RunDirError: it is unreadable or not a results record (a JSON object).
    """
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} is unreadable ({err})") from None
    if not isinstance(results, dict):
        raise RunDirError(f"{path} does not hold a results record (a JSON object)")
    return results


def completed_results(out_dir: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The results of a finished job in ``out_dir`` with the same config (``config_changes``),
    else None (none yet, unreadable, failed, or another config)."""
    try:
        done = read_results(out_dir)
    except RunDirError as err:
        log.warning("%s: running the job", err)
        return None
    if done is None or done.get("status") != "complete":
        return None
    if config_changes(done.get("config") or {}, config):
        log.warning("%s was made with another config: not skipping it", out_dir / "results.json")
        return None
    return done


def _discard(out_dir: Path) -> None:
    for name in DISCARDED_ON_OVERWRITE:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    log.warning("existing_run=overwrite: discarded the previous run's %s in %s",
                DISCARDED_ON_OVERWRITE, out_dir)


def resume_point(
    out_dir: Path, config: Mapping[str, Any], files: Mapping[str, Path], policy: str, rank: int = 0
) -> str | None:
    """The checkpoint a job without ``ckpt_path`` continues from in ``out_dir``, or None for
    a fresh start (see the module docstring for ``policy``). Other DDP ranks follow the
    decision rank 0 made before starting them: ``last.ckpt`` if it is there.

    Raises:
        RunDirError: the directory holds a run this job must not continue or replace.
    """
    if policy not in EXISTING_RUN:
        raise ValueError(f"existing_run {policy!r} not in {EXISTING_RUN}")
    last = files.get(LAST)
    if rank != 0:
        return str(last) if last is not None and last.is_file() else None
    found = sorted({p.name for f in files.values() if f.parent.is_dir() for p in f.parent.glob("*.ckpt")})
    if not found:
        return None
    what = f"{out_dir} already holds a run's checkpoints ({', '.join(found)})"
    options = "choose another hydra.run.dir, or discard that run with existing_run=overwrite"
    if policy == "overwrite":
        _discard(out_dir)
        return None
    if policy == "refuse":
        raise RunDirError(f"{what} (existing_run=refuse): {options}, or continue it with existing_run=resume")
    if last is None or not last.is_file():
        raise RunDirError(f"{what} but no {LAST}.ckpt to continue from: {options}")
    try:
        saved = load_checkpoint(last).get("hyper_parameters") or {}
    except Exception as err:  # a truncated or foreign file: it cannot be continued
        raise RunDirError(
            f"{what}, and {last} cannot be read ({type(err).__name__}: {err}): {options}"
        ) from None
    changed = config_changes(saved, config)
    if changed:
        shown = "\n  ".join(changed[:20]) + ("\n  ..." if len(changed) > 20 else "")
        raise RunDirError(f"{what} made with another config:\n  {shown}\n{options}")
    try:
        previous = read_results(out_dir) or {}
    except RunDirError:  # unreadable: not a complete run
        previous = {}
    if previous.get("status") == "complete":
        raise RunDirError(
            f"{what} of a complete run with this config: skip_complete=true returns its results; "
            "existing_run=overwrite trains it again"
        )
    log.info("continuing the run in %s from %s (existing_run=resume)", out_dir, last)
    return str(last)
