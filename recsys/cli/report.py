"""recsys-report: aggregate a sweep directory into a table, TPME and Pareto plots.

    recsys-report multirun/compare_methods/<time>
    recsys-report <sweep dir> --out reports/ --weights 0.45 0.10 0.45

Writes report.md (per dataset a table of effectiveness, timed efficiency and TPME and one of
counted cost and query latency; the failed runs, and the unreadable ones: a truncated
results.json or saved Hydra config, named with its parse error), report.csv (the per-method
figures), pareto_memory.png, pareto_time.png and pareto_flops.png into --out (default: the
sweep directory), and prints the markdown. Runs that tested modality subsets
(``eval.modality_subsets``) add tables of quality per subset, and runs that pruned by their gates
(``prune.gate_threshold``) a gate pruning table (recsys.report.robustness).
Unreadable runs do not stop the report (exit status 0). A run is a directory with
results.json or .hydra/; the log directories recsys-eval / recsys-export write inside a run
are not runs. See recsys.report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.atomic_io import atomic_path, write_text_atomic
from recsys.report import (
    DEFAULT_WEIGHTS,
    TPMEWeights,
    load_runs,
    render_report,
    save_pareto_plots,
    summarise,
)
from recsys.report.robustness import load_pruning, load_subset_metrics, pruning_table, subset_tables


def write_report(sweep_dir: Path, out_dir: Path, weights: TPMEWeights) -> str:
    """Write every report file for ``sweep_dir`` into ``out_dir``; returns the markdown."""
    runs = load_runs(sweep_dir)
    if runs.is_empty():
        raise SystemExit(f"recsys-report: no runs (results.json or .hydra/) under {sweep_dir}")
    summary = summarise(runs, weights)
    text = render_report(summary, runs, weights, title=f"Sweep report: {sweep_dir}")
    if subsets := subset_tables(load_subset_metrics(sweep_dir)):
        text += f"\n{subsets}\n"
    if pruned := pruning_table(load_pruning(sweep_dir)):
        text += f"\n{pruned}\n"
    write_text_atomic(out_dir / "report.md", text)
    with atomic_path(out_dir / "report.csv") as tmp:
        summary.write_csv(tmp)
    save_pareto_plots(summary, out_dir)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="recsys-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="sweep (or runs) directory, searched recursively")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: sweep_dir)")
    parser.add_argument("--weights", type=float, nargs=3, default=None, metavar=("TIME", "PARAMS", "MEMORY"),
                        help="TPME weights, summing to 1 (default 0.45 0.10 0.45)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"not a directory: {args.sweep_dir}")
    try:
        weights = TPMEWeights.of(args.weights) if args.weights else DEFAULT_WEIGHTS
    except ValueError as err:
        parser.error(str(err))
    print(write_report(args.sweep_dir, args.out or args.sweep_dir, weights), end="")


if __name__ == "__main__":
    main()
