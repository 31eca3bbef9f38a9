"""The record of an Optuna search (``recsys-train -m hparams_search=...``): one row per trial.

    python experiments/optuna_trials.py multirun/optuna_sasrec_id/<time> --out trials.md

Reads each trial's sampled values (``<trial>/.hydra/overrides.yaml``, kept to the keys of
``hydra.sweeper.params``) and its ``results.json`` (the objective ``eval.monitor`` on validation, test
HR@10 / NDCG@10, epochs), sorts the trials by the objective, marks the best one, and adds the
sweeper's ``optimization_results.yaml`` (best value and parameters). A trial without a complete
results.json is listed as such, never dropped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def trials(sweep: Path) -> tuple[list[str], list[dict]]:
    """The searched keys and one record per trial directory of ``sweep``."""
    found = (p.parents[1] for p in sweep.glob("*/.hydra/overrides.yaml"))
    trial_dirs = sorted(found, key=lambda d: int(d.name))
    if not trial_dirs:
        raise SystemExit(f"{sweep}: no trial directories (<n>/.hydra/overrides.yaml): not a sweep directory")
    hydra = yaml.safe_load((trial_dirs[0] / ".hydra" / "hydra.yaml").read_text())["hydra"]
    keys = sorted(hydra["sweeper"]["params"])
    records = []
    for trial in trial_dirs:
        overrides_file = trial / ".hydra" / "overrides.yaml"
        sampled = dict(o.split("=", 1) for o in yaml.safe_load(overrides_file.read_text()))
        results_file = trial / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        record = {"trial": int(trial.name), "values": {k: sampled.get(k, "") for k in keys},
                  "status": results.get("status", "no results.json")}
        if record["status"] == "complete":
            monitor = results["config"]["eval"]["monitor"]
            split, metric = monitor.split("/")
            record |= {"objective": results["metrics"][split][metric], "monitor": monitor,
                       "test hr@10": results["metrics"]["test"]["hr@10"],
                       "test ndcg@10": results["metrics"]["test"]["ndcg@10"],
                       "epochs": results["efficiency"]["epochs"]}
        records.append(record)
    return keys, records


def short(value: str) -> str:
    """A sampled float to 3 significant digits (``0.0016675211761940137`` -> ``0.00167``)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.3g}"


def table(sweep: Path) -> str:
    keys, records = trials(sweep)
    done = sorted((r for r in records if "objective" in r), key=lambda r: -r["objective"])
    monitor = done[0]["monitor"] if done else "objective"
    header = " | ".join(f"`{k}`" for k in keys)
    lines = [f"# Optuna trials: {sweep.name}", "",
             f"{len(records)} trials, {len(done)} complete; sorted by {monitor} (maximised).", "",
             f"| trial | {header} | {monitor} | test hr@10 | test ndcg@10 | epochs |",
             "|---|" + "---|" * (len(keys) + 4)]
    for r in done:
        mark = " (best)" if r is done[0] else ""
        figures = f"{r['objective']:.4f} | {r['test hr@10']:.4f} | {r['test ndcg@10']:.4f} | {r['epochs']}"
        values = " | ".join(short(r["values"][k]) for k in keys)
        lines.append(f"| {r['trial']}{mark} | {values} | {figures} |")
    for r in records:
        if "objective" not in r:
            lines.append(f"| {r['trial']} | " + " | ".join(short(r["values"][k]) for k in keys)
                         + f" | {r['status']} | | | |")
    best_file = sweep / "optimization_results.yaml"
    if best_file.is_file():
        best = yaml.safe_load(best_file.read_text())
        lines += ["", f"Sweeper's best: {best['best_value']:.4f} with `"
                  + " ".join(f"{k}={short(str(v))}" for k, v in best["best_params"].items()) + "`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the search's sweep directory")
    parser.add_argument("--out", type=Path, help="write the table here too")
    args = parser.parse_args()
    report = table(args.sweep)
    if args.out:
        args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
