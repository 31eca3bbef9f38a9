"""One-at-a-time ablation of a training recipe: which change moves the metric, and by how much.

    python experiments/ablate_recipe.py --data scientific
    python experiments/ablate_recipe.py --data movielens --seeds 0 1 2 \
        --base adapter=id encoder/text=none encoder/image=none \
        --change gelu=model.activation=gelu --change full=loss.name=full

Trains ``--base`` once and ``--base`` plus each ``--change NAME=OVERRIDE[,OVERRIDE...]`` once
per seed, each a plain ``recsys-train`` run in ``<work>/<data>/<name>_s<seed>`` (a run already
complete with the same config is reused: ``skip_complete``). The default changes are the
differences between this project's ID-only SASRec and RecBole's SASRec (see
``experiments/peer_recbole.py``), applied to a base that starts every table N(0, 0.02).

Prints validation NDCG@10 (the selection metric), test HR@10 / NDCG@10 under the configured
protocol (default: the official masking), epochs and s/epoch per variant, mean over seeds and
the change against the base, and writes ``ablation_<data>.{json,md}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from recsys_train_run import mean_std, train_run

ROOT = Path(__file__).resolve().parents[1]
BASE = ["adapter=id", "encoder/text=none", "encoder/image=none", "adapter.init=normal", "model.init=normal"]
#: RecBole SASRec's settings where they differ from this project's defaults.
RECBOLE_DIFFERENCES = [  # cheapest first: prefixes trains ~window x the sequences per epoch
    "xavier_init=adapter.init=xavier_normal,model.init=xavier_normal",
    "dropout_0.5=model.dropout=0.5",
    "gelu=model.activation=gelu",
    "lr_1e-3=optimizer.lr.other=1e-3",
    "select_on_ndcg=eval.monitor=val/ndcg@10,callbacks.early_stopping.patience=10",
    "full_softmax=loss.name=full",
    "prefixes=loss.targets=prefixes",
]
COLUMNS = (("val", "ndcg@10"), ("test", "hr@10"), ("test", "ndcg@10"))


def row(results: list[dict]) -> dict:
    """Mean (and std over seeds) of the reported columns, epochs and s/epoch."""
    out = {}
    for split, metric in COLUMNS:
        out[f"{split} {metric}"] = mean_std([r["metrics"][split][metric] for r in results])
    out["epochs"] = statistics.mean(r["efficiency"]["epochs"] for r in results)
    out["s/epoch"] = statistics.median(r["efficiency"]["s_per_epoch"] for r in results)
    return out


def table(data: str, seeds: list[int], base: list[str], rows: dict[str, dict]) -> str:
    base_row = rows["base"]
    lines = [f"# One-at-a-time ablation: {data}, seeds {seeds}", "", f"base: `{' '.join(base)}`", "",
             "| variant | overrides | " + " | ".join(f"{s} {m}" for s, m in COLUMNS)
             + " | Δ test ndcg@10 | epochs | s/epoch |",
             "|---|---|" + "---|" * (len(COLUMNS) + 3)]
    for name, record in rows.items():
        cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in (record[f"{a} {b}"] for a, b in COLUMNS))
        delta = record["test ndcg@10"][0] - base_row["test ndcg@10"][0]
        lines.append(f"| {name} | `{' '.join(record['overrides']) or '-'}` | {cells} | {delta:+.4f} "
                     f"| {record['epochs']:.0f} | {record['s/epoch']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="scientific", help="a conf/data option (default scientific)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--base", nargs="*", default=BASE, help="recsys-train overrides of the base")
    parser.add_argument("--change", action="append", metavar="NAME=OVERRIDE[,OVERRIDE...]",
                        help="one variant (repeatable); default: RecBole's SASRec settings one at a time")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "ablate_recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "cpu-2core" / "peer")
    args = parser.parse_args()

    variants = {"base": []}
    for spec in args.change or RECBOLE_DIFFERENCES:
        name, sep, overrides = spec.partition("=")
        if not sep or not overrides or name in variants:
            parser.error(f"--change {spec!r}: expected a new NAME=OVERRIDE[,OVERRIDE...]")
        variants[name] = overrides.split(",")
    rows = {}
    for name, overrides in variants.items():
        runs = {seed: args.work / args.data / f"{name}_s{seed}" for seed in args.seeds}
        results = [train_run(args.data, seed, [*args.base, *overrides], run) for seed, run in runs.items()]
        rows[name] = {"overrides": overrides, **row(results)}
        print(name, json.dumps(rows[name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = table(args.data, args.seeds, args.base, rows)
    (args.out / f"ablation_{args.data}.json").write_text(json.dumps(
        {"data": args.data, "seeds": args.seeds, "base": args.base, "variants": rows}, indent=2) + "\n")
    (args.out / f"ablation_{args.data}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
