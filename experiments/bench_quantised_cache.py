"""Quantised caches: what each ``cache.dtype`` costs in bytes and in test HR@10 / NDCG@10.

    python experiments/bench_quantised_cache.py                      # movielens + scientific, 3 seeds
    python experiments/bench_quantised_cache.py --data movielens --seeds 0 --dtypes float16 int8
    python experiments/bench_quantised_cache.py --data scientific --dtypes float16 int8 \
        --served-dtypes bfloat16 int8 int8_item_layer float8_e4m3   # caches of each converted already
    python experiments/bench_quantised_cache.py --smoke --work /tmp/w --out /tmp/o   # seconds

For each ``--data`` (``movielens``: ``experiment=demo``, MiniLM + EfficientNet-Lite0;
``scientific``: ``experiment=iisan_scientific_text``, MiniLM) and each ``--dtypes`` entry,
one plain ``recsys-train ... cache.dtype=<dtype>`` run per seed in
``<work>/<data>/<dtype>_s<seed>`` (a run complete there with the same config is reused:
``skip_complete``). Every dtype but float16 is converted from the existing float16 caches by
the run's own ``prepare`` step (recsys/cache/convert.py): no encoder runs again.

Reports per dtype: the bytes of the cache files the runs read (values + int8 scales, from their
manifests, checked against the fingerprints in results.json) and their ratio to float16, the
resident feature bytes training counted (``feature_bytes``: the entries the adapter reads),
test HR@10 / NDCG@10 (mean ± std over seeds) and the relative change of mean NDCG@10 against
float16 from the same seeds, and the same for validation NDCG@10 at the selected epoch. With
float16 in ``--dtypes``, a second table holds quantisation alone, without the training noise
that moves a run's test NDCG@10 by several % from seed to seed: each float16 run's best
checkpoint tested on the features of each ``--served-dtypes`` entry (default: the other
``--dtypes``; their caches must exist, as the runs of a dtype convert them) with
``recsys-eval cache_dtype=<dtype>`` (its log beside the run), and the change against the same
run on float16, paired by seed; one evaluation, not one training run, per seed and dtype.
``float32`` may be added to ``--dtypes``, but it is encoded, not converted (the encoder runs
once more). Writes
``<out>/<data>.{json,md}`` atomically (default out: experiments/results/cpu-2core/quantised_cache).
``--smoke``: the small synthetic dataset, 1 epoch, seed 0, float16 and int8 (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from recsys_train_run import mean_std, train_run

from recsys.atomic_io import write_json_atomic, write_text_atomic
from recsys.cache.codecs import CODECS
from recsys.cache.manifest import CachePaths, known_fingerprints

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "cpu-2core" / "quantised_cache"
EXPERIMENTS = {"movielens": ["experiment=demo"], "scientific": ["experiment=iisan_scientific_text"]}
DTYPES = ["float16", "bfloat16", "int8", "int8_item_layer", "float8_e4m3"]
#: ``--smoke``: the tests' small synthetic dataset, one CPU epoch, text only.
SMOKE = ["data.raw.n_users=600", "data.raw.n_items=60", "data.raw.n_clusters=6", "data.raw.max_length=14",
         "data.raw.image_size=32", "adapter=iisan_intra", "encoder/image=none", "trainer.accelerator=cpu",
         "trainer.max_epochs=1", "encoder.text.batch_size=64"]
METRICS = ("hr@10", "ndcg@10")
#: test, and validation at the selected epoch: on MovieLens' 943 test users a run's test NDCG@10
#: moves by several % with the epoch early stopping picks, its validation figure far less.
STAGES = ("test", "val")


def cache_bytes(results: dict) -> int:
    """Bytes of the cache files (values and int8 scales) a run read, from their manifests;
    ValueError when a cache changed since the run."""
    config, total = results["config"], 0
    for modality, fingerprint in results["inputs"]["cache_fingerprints"].items():
        paths = CachePaths.of(config["cache"]["dir"], config["encoder"][modality]["name"])
        manifest = json.loads(paths.manifest.read_text())
        if fingerprint not in known_fingerprints(manifest):
            raise ValueError(f"{paths.manifest} changed since the run that read it")
        checksum = manifest["checksum"]
        total += checksum["bytes"] + (checksum.get("scales") or {}).get("bytes", 0)
    return total


def summary(runs: list[dict]) -> dict:
    """Bytes and test metrics (mean, std over seeds) of one dtype's runs."""
    return {
        "cache_bytes": cache_bytes(runs[0]),
        "feature_bytes": runs[0]["efficiency"].get("feature_bytes"),
        **{f"{stage} {m}": mean_std([r["metrics"][stage][m] for r in runs])
           for stage in STAGES for m in METRICS},
        "per_seed": {r["seed"]: {f"{stage} {m}": r["metrics"][stage][m] for stage in STAGES for m in METRICS}
                     for r in runs},
    }


def served(run_dir: Path, dtype: str) -> dict:
    """The float16 run in ``run_dir`` tested, val and test, on its features stored as ``dtype``
    (``recsys-eval cache_dtype=<dtype>``): its eval.json."""
    with open(run_dir.parent / f"{run_dir.name}.eval_{dtype}.log", "w") as log:
        subprocess.run([str(Path(sys.executable).parent / "recsys-eval"), f"run_dir={run_dir}",
                        f"cache_dtype={dtype}"], check=True, stdout=log, stderr=subprocess.STDOUT,
                       env=os.environ | {"WANDB_MODE": "disabled"})
    return json.loads((run_dir / "eval.json").read_text())


def served_summary(float16_runs: dict[Path, dict], dtype: str) -> dict:
    """Metrics of the float16 runs (run dir -> results.json) tested on ``dtype`` features, and
    their NDCG@10 change against the same runs' own (mean, std over seeds)."""
    per_seed = {}
    for run_dir, results in float16_runs.items():
        evaluated = served(run_dir, dtype)
        figures = {f"{stage} {m}": evaluated[stage][m] for stage in STAGES for m in METRICS}
        for stage in STAGES:
            own = results["metrics"][stage]["ndcg@10"]
            figures[f"{stage} ndcg@10 vs float16"] = evaluated[stage]["ndcg@10"] / own - 1
        per_seed[results["seed"]] = figures
    seeds = list(per_seed.values())
    return {**{key: mean_std([seed[key] for seed in seeds]) for key in seeds[0]}, "per_seed": per_seed}


def served_table(served: dict[str, dict]) -> str:
    """The float16 models on each dtype's features (dtype -> ``served_summary``)."""
    lines = ["", "## Quantisation alone: the float16 runs tested on each dtype's features", "",
             "Each seed's float16 checkpoint, tested again on the same features stored as the "
             "dtype (`recsys-eval cache_dtype=<dtype>`); changes are paired by seed.", "",
             "| cache.dtype | test HR@10 | test NDCG@10 | NDCG@10 vs float16 | val NDCG@10 "
             "| val NDCG@10 vs float16 |", "|---|---|---|---|---|---|"]
    for dtype, figures in served.items():
        cells = [f"{figures[key][0]:.4f} ± {figures[key][1]:.4f}" for key in ("test hr@10", "test ndcg@10")]
        cells.insert(2, "{:+.2%} ± {:.2%}".format(*figures["test ndcg@10 vs float16"]))
        cells += [f"{figures['val ndcg@10'][0]:.4f} ± {figures['val ndcg@10'][1]:.4f}",
                  "{:+.2%} ± {:.2%}".format(*figures["val ndcg@10 vs float16"])]
        lines.append("| " + " | ".join([dtype, *cells]) + " |")
    return "\n".join(lines) + "\n"


def table(data: str, seeds: list[int], rows: dict[str, dict]) -> str:
    base = rows.get("float16")
    lines = [f"# Quantised caches: {data}, seeds {seeds}", "",
             "| cache.dtype | cache bytes | vs float16 | resident features | test HR@10 | test NDCG@10 "
             "| NDCG@10 vs float16 | val NDCG@10 | val NDCG@10 vs float16 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dtype, row in rows.items():
        ratio = "-" if base is None else f"{row['cache_bytes'] / base['cache_bytes']:.3f}"
        change, val_change = ("-" if base is None else f"{row[key]:+.2%}"
                              for key in ("ndcg@10 vs float16", "val ndcg@10 vs float16"))
        hr, ndcg, val = (f"{m:.4f} ± {s:.4f}" for m, s in (row["test hr@10"], row["test ndcg@10"],
                                                           row["val ndcg@10"]))
        resident = "-" if row["feature_bytes"] is None else f"{row['feature_bytes']:,}"
        cells = [dtype, f"{row['cache_bytes']:,}", ratio, resident, hr, ndcg, change, val, val_change]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bench(data: str, overrides: list[str], dtypes: list[str], seeds: list[int], work: Path, out: Path,
          served_dtypes: list[str] | None = None) -> None:
    """Train ``data`` in each of ``dtypes`` with each of ``seeds``, test the float16 runs on each
    of ``served_dtypes`` (None: the other ``dtypes``); write ``<out>/<data>.{json,md}``."""
    rows, float16_runs, served = {}, {}, {}
    for dtype in dtypes:
        run_dirs = [work / data / f"{dtype}_s{seed}" for seed in seeds]
        runs = [train_run(data, seed, [*overrides, f"cache.dtype={dtype}"], run_dir)
                for seed, run_dir in zip(seeds, run_dirs, strict=True)]
        rows[dtype] = summary(runs)
        if dtype == "float16":
            float16_runs = dict(zip(run_dirs, runs, strict=True))
        print(data, dtype, json.dumps({k: v for k, v in rows[dtype].items() if k != "per_seed"}), flush=True)
    if "float16" in rows:
        for stage, key in (("test", "ndcg@10 vs float16"), ("val", "val ndcg@10 vs float16")):
            base = rows["float16"][f"{stage} ndcg@10"][0]
            for row in rows.values():
                row[key] = row[f"{stage} ndcg@10"][0] / base - 1
        for dtype in served_dtypes if served_dtypes is not None else dtypes:
            if dtype != "float16":
                served[dtype] = served_summary(float16_runs, dtype)
    report = table(data, seeds, rows) + (served_table(served) if served else "")
    record = {"data": data, "seeds": seeds, "overrides": overrides, "dtypes": rows, "served": served}
    write_json_atomic(out / f"{data}.json", record)
    write_text_atomic(out / f"{data}.md", report)
    print(report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=sorted(EXPERIMENTS), default=sorted(EXPERIMENTS))
    parser.add_argument("--dtypes", nargs="+", choices=list(CODECS), default=DTYPES)
    parser.add_argument("--served-dtypes", nargs="+", choices=list(CODECS), default=None,
                        help="dtypes the float16 runs are tested on (default: the other --dtypes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--overrides", nargs="*", default=[], help="recsys-train overrides for every run")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, 1 epoch, seed 0, fp16 + int8")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_quantised_cache")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    plans = {name: EXPERIMENTS[name] for name in args.data}
    if args.smoke:
        plans, args.seeds, args.dtypes = {"synthetic": SMOKE}, [0], ["float16", "int8"]
    for data, overrides in plans.items():
        bench(data, [*overrides, *args.overrides], args.dtypes, args.seeds, args.work, args.out,
              args.served_dtypes)


if __name__ == "__main__":
    main()
