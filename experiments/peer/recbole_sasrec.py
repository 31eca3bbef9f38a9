"""Train RecBole's SASRec on an exported dataset and write what the comparison needs.

Runs INSIDE the RecBole environment (``experiments/peer_recbole.py`` makes it and calls this
with its python); it imports nothing of recsys. Trains with RecBole's own Trainer (its loss,
initialisation, augmentation of every training prefix, early stopping on valid NDCG@10),
evaluates with RecBole's own full-sort evaluator, and writes to ``--out``:

- ``item_emb.npy`` float32 [N+1, d]: RecBole's item embedding table in the exported item-id
  order (row i = item token ``str(i)``, row 0 = padding);
- ``<split>_users.npy`` int64 [U], ``<split>_states.npy`` float32 [U, d],
  ``<split>_targets.npy`` int64 [U] for ``valid`` and ``test``: each evaluated user's sequence
  representation and target, in exported ids (SASRec scores = states @ item_emb.T);
- ``recbole.json``: RecBole's own best-valid and test results, epochs, seconds, versions.

    <recbole venv>/bin/python experiments/peer/recbole_sasrec.py --config run.yaml --out out/
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

# RecBole reloads its own best checkpoint (it holds its Config object), which torch >= 2.6
# refuses by default; the file is the one this process just wrote.
torch.load = functools.partial(torch.load, weights_only=False)

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402


def _exported_ids(dataset, field: str, internal: torch.Tensor) -> np.ndarray:
    """RecBole internal ids of ``field`` -> the exported integer ids (its tokens)."""
    tokens = dataset.field2id_token[field]
    return np.array([int(tokens[i]) for i in internal.tolist()], dtype=np.int64)


def _states(model, loader, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, states [U, d], targets) of every user ``loader`` evaluates."""
    users, states, targets = [], [], []
    model.eval()
    with torch.no_grad():
        for interaction, *_ in loader:
            out = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
            users.append(_exported_ids(dataset, model.USER_ID, interaction[model.USER_ID]))
            targets.append(_exported_ids(dataset, model.ITEM_ID, interaction[model.POS_ITEM_ID]))
            states.append(out.float().numpy())
    return np.concatenate(users), np.concatenate(states), np.concatenate(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="RecBole config yaml (written by peer_recbole.py)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    config = Config(model="SASRec", config_file_list=[args.config])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    epochs = []
    train_epoch = trainer._train_epoch
    trainer._train_epoch = lambda *a, **kw: epochs.append(1) or train_epoch(*a, **kw)  # count epochs
    tic = time.perf_counter()
    best_valid, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    seconds = time.perf_counter() - tic
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    weight = model.item_embedding.weight.detach().float()
    tokens = dataset.field2id_token[model.ITEM_ID]
    item_emb = np.zeros((len(tokens), weight.shape[1]), dtype=np.float32)  # [PAD] + N items
    for internal, token in enumerate(tokens):
        if internal:
            item_emb[int(token)] = weight[internal].numpy()
    np.save(args.out / "item_emb.npy", item_emb)
    for split, loader in (("valid", valid_data), ("test", test_data)):
        users, states, targets = _states(model, loader, dataset)
        np.save(args.out / f"{split}_users.npy", users)
        np.save(args.out / f"{split}_states.npy", states)
        np.save(args.out / f"{split}_targets.npy", targets)
    import recbole

    record = {
        "best_valid": {k: float(v) for k, v in best_valid_result.items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "epochs": len(epochs),
        "train_seconds": round(seconds, 1),
        "recbole": recbole.__version__,
        "torch": torch.__version__,
    }
    (args.out / "recbole.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
