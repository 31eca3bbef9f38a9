"""Peer check: RecBole's SASRec against this project's ID-only SASRec on the same data.

    python experiments/peer_recbole.py --data movielens --seeds 0 1 2
    python experiments/peer_recbole.py --data scientific --seeds 0 --ours adapter=id encoder/text=none

1. Prepares (or reuses) the processed dataset of ``--data`` and exports its interactions to
   RecBole's atomic format (``user_id:token item_id:token timestamp:float``, the timestamp
   being the position, so RecBole's time order is exactly this project's order). RecBole's
   leave-one-out split (``LS: valid_and_test``, ``order: TO``) and an input window of
   ``data.protocol.window`` items then give the same users, targets and inputs.
2. Makes RecBole's own environment once (``--venv``, default ``.venv-recbole``: RecBole
   1.2.1, the project's torch, numpy < 2; never a project dependency) and trains RecBole's
   SASRec with its defaults (CE loss, Adam 1e-3, dropout 0.5, batch 2048, every training
   prefix a target, early stopping on valid NDCG@10, patience 10) per seed
   (``experiments/peer/recbole_sasrec.py``).
3. Trains this project's model per seed with ``recsys-train`` (``--ours`` overrides; default
   the ID-only SASRec with its defaults).
4. Scores both the same way, with this project's full-ranking evaluator
   (``recsys.eval.ranking.full_ranking_ranks``, pessimistic ties) on the test users, under
   three protocols: ``official`` (the user's history masked, a target that repeats a history
   item included), ``kept`` (history masked but the target) and ``unmasked`` (nothing
   masked: RecBole's protocol for sequential models). RecBole's own figures are reported
   beside them as a check of the export.

``--peer-only`` trains (or reuses) RecBole's seeds alone, e.g. in the background while this
project's recipes are still being chosen. A seed whose outputs exist with the same config is
reused (RecBole's ``recbole.json``; ours through ``skip_complete``), so an interrupted
comparison resumes. Prints one table (mean ± std over seeds, users evaluated) and writes
``<data>.json`` (every run) and ``<data>.md`` (the table) to ``--out``; with other ``--ours``
overrides, ``<data>_<hash of them>.*``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from recsys_train_run import mean_std, train_run

from data_prep.prep import prepare
from recsys.cli import compose
from recsys.data.processed import ProcessedDataset
from recsys.eval.metrics import metrics_from_ranks
from recsys.eval.ranking import full_ranking_ranks
from recsys.train.builders import build_datamodule
from recsys.train.restore import restore_run

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "peer" / "recbole_sasrec.py"
RECBOLE = "recbole==1.2.1"
#: RecBole 1.2.1's import-time needs (its ray / hyperopt / thop extras are not used here);
#: numpy 2 removed the aliases it sets (np.float_).
RECBOLE_DEPS = ["numpy<2", "pandas<3", "scipy", "scikit-learn", "tensorboard", "pyyaml", "tqdm",
                "colorlog==4.7.2", "colorama==0.4.4", "tabulate", "texttable", "psutil"]
TORCH = torch.__version__.split("+")[0]  # the project's torch, without the local build tag
PROTOCOLS = ("official", "kept", "unmasked")
METRICS = ("hr@10", "ndcg@10", "mrr@10")
OURS_DEFAULT = ["adapter=id", "encoder/text=none", "encoder/image=none"]


def ensure_recbole_env(venv: Path) -> Path:
    """The python of RecBole's own venv, made once (a stamp file records the install)."""
    python, stamp = venv / "bin" / "python", venv / ".installed"
    wanted = f"{RECBOLE} torch=={TORCH} " + " ".join(RECBOLE_DEPS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"torch=={TORCH}", *RECBOLE_DEPS], check=True)
    subprocess.run([*pip, "--no-deps", RECBOLE], check=True)
    stamp.write_text(wanted)
    return python


def export_interactions(dataset: ProcessedDataset, data_root: Path, name: str) -> None:
    """``<data_root>/<name>/<name>.inter``: one line per interaction, position as time.

    Rewritten only when its content changes, by rename, so comparisons run side by side
    (other ``--ours`` recipes) never see a half-written file."""
    folder = data_root / name
    folder.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions.select("user_id", "item_id", "position")
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{p}" for u, i, p in inter.iter_rows()]
    text, target = "\n".join(lines) + "\n", folder / f"{name}.inter"
    if target.is_file() and target.read_text() == text:
        return  # another comparison may be reading it right now: leave it alone
    partial = target.with_suffix(f".inter.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(target)  # atomic: a reader sees the old file or the new one, never half


def recbole_config(data_root: Path, name: str, window: int, seed: int, work: Path) -> dict:
    """RecBole SASRec with its defaults, on the exported leave-one-out split."""
    return {
        "data_path": str(data_root), "dataset": name,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": window,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_neg_sample_args": None,  # CE loss over all items
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "seed": seed, "use_gpu": False, "show_progress": False, "state": "INFO",
        "checkpoint_dir": str(work / "saved"), "epochs": 300, "stopping_step": 10,
    }


def rank_metrics(states: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor,
                 history: torch.Tensor) -> dict[str, dict[str, float]]:
    """HR/NDCG/MRR@10 under each protocol: ``states`` [U, d], ``item_emb`` [N+1, d],
    ``targets`` [U], ``history`` [U, H] 0-padded."""
    none = history[:, :0]
    settings = {"official": (history, True), "kept": (history, False), "unmasked": (none, False)}
    out = {}
    for protocol, (seen, mask_target) in settings.items():
        ranks = full_ranking_ranks(states, item_emb, targets, seen, mask_target=mask_target)
        sums = metrics_from_ranks(ranks, ks=(10,))  # sums over users
        out[protocol] = {k: float(v) / len(ranks) for k, v in sums.items()}
    return out


def test_split(dm) -> dict[str, torch.Tensor]:
    """This project's test examples of every user, in user order: inputs, target, history, user."""
    batches = list(dm.test_dataloader())
    width = max(b["history"].shape[1] for b in batches)
    pad = lambda h: torch.nn.functional.pad(h, (0, width - h.shape[1]))  # noqa: E731
    return {
        "inputs": torch.cat([b["inputs"] for b in batches]).long(),
        "target": torch.cat([b["target"] for b in batches]).long(),
        "history": torch.cat([pad(b["history"]) for b in batches]).long(),
        "user": torch.cat([b["user"] for b in batches]).long(),
    }


def peer_seed(python: Path, config: dict, work: Path, split: dict) -> dict:
    """Train RecBole's SASRec once; its own figures and ours on its representations."""
    work.mkdir(parents=True, exist_ok=True)
    config_file, done = work / "config.yaml", work / "recbole.json"
    if done.is_file() and config_file.is_file() and yaml.safe_load(config_file.read_text()) == config:
        print(f"reusing {work} (same config; delete {done.name} to train again)", flush=True)
    else:
        done.unlink(missing_ok=True)
        config_file.write_text(yaml.safe_dump(config))
        with open(work / "recbole.log", "w") as log:
            subprocess.run([str(python), str(RUNNER), "--config", str(config_file), "--out", str(work)],
                           check=True, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    own = json.loads(done.read_text())
    users = np.load(work / "test_users.npy")
    order = np.argsort(users)
    states = torch.from_numpy(np.load(work / "test_states.npy")[order])
    targets = torch.from_numpy(np.load(work / "test_targets.npy")[order])
    same_users = torch.equal(torch.from_numpy(users[order]), split["user"])
    if not same_users or not torch.equal(targets, split["target"]):
        raise RuntimeError(f"RecBole's test users or targets differ from this project's ({work}): "
                           "the export is off")
    item_emb = torch.from_numpy(np.load(work / "item_emb.npy"))
    return {"metrics": rank_metrics(states, item_emb, targets, split["history"]), "recbole_own": own["test"],
            "users": len(users), "epochs": own["epochs"], "train_seconds": own["train_seconds"]}


def ours_seed(data: str, seed: int, overrides: list[str], run_dir: Path, split: dict) -> dict:
    """Train this project's model once (``recsys-train``) and score it the same way."""
    tic = time.perf_counter()
    results = train_run(data, seed, overrides, run_dir)
    run = restore_run(run_dir)
    model = run.module.model.eval()
    with torch.no_grad():
        item_emb = model.all_item_embeddings()
        states = torch.cat([model.user_embedding(chunk) for chunk in split["inputs"].split(1024)])
    return {"metrics": rank_metrics(states, item_emb, split["target"], split["history"]),
            "users": len(states), "epochs": results["efficiency"]["epochs"],
            "seconds": round(time.perf_counter() - tic, 1)}


def summarise(runs: list[dict]) -> dict[str, dict[str, list[float]]]:
    """protocol -> metric -> [mean, std] over seeds (std 0 for one seed)."""
    out = {}
    for protocol in PROTOCOLS:
        out[protocol] = {}
        for metric in METRICS:
            out[protocol][metric] = mean_std([r["metrics"][protocol][metric] for r in runs])
    return out


def table(name: str, sides: dict[str, dict], seeds: list[int]) -> str:
    rows = [f"# RecBole SASRec vs this project's model: {name}, seeds {seeds}", "",
            "| model | protocol | users | HR@10 | NDCG@10 | MRR@10 |", "|---|---|---|---|---|---|"]
    for side, record in sides.items():
        for protocol, values in record["summary"].items():
            cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in (values[k] for k in METRICS))
            rows.append(f"| {side} | {protocol} | {record['runs'][0]['users']} | {cells} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="movielens", help="a conf/data option (default movielens)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ours", nargs="*", default=OURS_DEFAULT, help="recsys-train overrides of our side")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-recbole")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "peer_recbole")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "cpu-2core" / "peer")
    parser.add_argument("--peer-only", action="store_true",
                        help="train (or reuse) RecBole's seeds only and print them; writes no report")
    args = parser.parse_args()

    cfg = compose("train", [f"data={args.data}", *OURS_DEFAULT])
    processed = prepare(OmegaConf.to_container(cfg.data, resolve=True))
    dm = build_datamodule(cfg)
    split = test_split(dm)
    work = args.work / args.data
    export_interactions(ProcessedDataset.load(processed), work / "recbole_data", args.data)
    python = ensure_recbole_env(args.venv)
    sides: dict[str, dict] = {"recbole_sasrec": {"runs": []}, "ours: " + " ".join(args.ours): {"runs": []}}
    (peer, _), (ours, _) = sides.items()
    recipe = hashlib.sha256(" ".join(args.ours).encode()).hexdigest()[:8]  # one run dir per --ours
    for seed in args.seeds:
        config = recbole_config(work / "recbole_data", args.data, int(cfg.data.protocol.window), seed, work)
        sides[peer]["runs"].append(peer_seed(python, config, work / f"recbole_s{seed}", split))
        if args.peer_only:
            print(json.dumps({peer: sides[peer]["runs"][-1]["metrics"]["official"]}), flush=True)
            continue
        ours_dir = work / (f"ours_s{seed}" if args.ours == OURS_DEFAULT else f"ours_{recipe}_s{seed}")
        sides[ours]["runs"].append(ours_seed(args.data, seed, args.ours, ours_dir, split))
        print(json.dumps({k: v["runs"][-1]["metrics"]["official"] for k, v in sides.items()}), flush=True)
    if args.peer_only:
        return
    for record in sides.values():
        record["summary"] = summarise(record["runs"])
    args.out.mkdir(parents=True, exist_ok=True)
    report = table(args.data, sides, args.seeds)
    name = args.data if args.ours == OURS_DEFAULT else f"{args.data}_{recipe}"
    (args.out / f"{name}.json").write_text(json.dumps(sides, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
