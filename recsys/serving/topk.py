"""Answer "which items next, for this history?" from an export alone (recsys/serving/export.py).

    >>> rec = ExportedRecommender.load("outputs/export/movielens_iisan")
    >>> rec.recommend(["50", "181", "258"], k=5)        # item keys of the dataset, oldest first
    Recommendation(items=[...], scores=[...], unknown=[])

The user encoder is looked up by name in the user-encoder registry (never imported from a
string in the file) and its weights come from safetensors: loading an export runs no code
from it. This module imports nothing of Lightning or Hydra: a server needs torch, polars and
safetensors only.

Scoring is the training model's: the last ``window`` known items of the history, left-padded,
go through the user encoder; the state at the last position is dotted with every item
embedding; items of the history are excluded by default; the exact top k come from
``chunked_topk`` (memory bounded by the chunk, whatever the catalogue size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file

from recsys.eval.ranking import chunked_topk
from recsys.models import USER_ENCODERS, build_user_encoder

#: Version of the export layout (``recsys.serving.export`` writes it, this module reads it).
FORMAT_VERSION = 2


@dataclass
class Recommendation:
    """Top-k answer: item keys and scores, best first, and the history keys not in the export."""

    items: list[str]
    scores: list[float]
    unknown: list[str] = field(default_factory=list)


class ExportedRecommender:
    """Item table [N+1, d] + user encoder, with the key <-> id mapping of the catalogue."""

    def __init__(self, item_embeddings: torch.Tensor, user_encoder: torch.nn.Module,
                 keys: list[str], window: int) -> None:
        self.item_embeddings = item_embeddings
        self.user_encoder = user_encoder.eval()
        self.keys = keys  # keys[i - 1] = key of item i
        self.ids = {k: i + 1 for i, k in enumerate(keys)}
        self.window = window

    @classmethod
    def load(cls, export_dir: str | Path) -> ExportedRecommender:
        export_dir = Path(export_dir)
        meta_file = export_dir / "export.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} not found: export a run first with recsys-export")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format_version {meta.get('format_version')} is not "
                             f"{FORMAT_VERSION}; re-export the run with this version of recsys")
        spec = meta["user_encoder"]
        if spec["name"] not in USER_ENCODERS:
            known = USER_ENCODERS.names()
            raise ValueError(f"{meta_file}: user encoder {spec['name']!r} is not one of {known}")
        encoder = build_user_encoder(spec["name"], **spec["options"])
        encoder.load_state_dict(load_file(export_dir / "user_encoder.safetensors"))
        table = load_file(export_dir / "item_embeddings.safetensors")["item_embeddings"]
        items = pl.read_parquet(export_dir / "items.parquet").sort("item_id")
        if items.height != meta["num_items"] or table.shape[0] != meta["num_items"] + 1:
            raise ValueError(f"{export_dir}: items.parquet, item_embeddings and export.json disagree "
                             f"on the number of items; re-export the run")
        return cls(table, encoder, [str(k) for k in items["key"]], int(meta["window"]))

    def recommend(self, history: list[str], k: int = 10, exclude_history: bool = True) -> Recommendation:
        """Top ``k`` next items for ``history`` (item keys, oldest first). Keys the export does
        not know are skipped and listed in ``unknown``; an empty known history raises."""
        known = [self.ids[str(key)] for key in history if str(key) in self.ids]
        unknown = [str(key) for key in history if str(key) not in self.ids]
        if not known:
            raise ValueError(f"none of the history items {history[:10]} is in the exported catalogue")
        inputs = torch.zeros(1, self.window, dtype=torch.long)
        recent = known[-self.window:]
        inputs[0, self.window - len(recent):] = torch.tensor(recent)
        excluded = torch.tensor([known]) if exclude_history else None
        with torch.no_grad():
            state = self.user_encoder(self.item_embeddings[inputs], inputs != 0)[:, -1]  # [1, d]
            scores, ids = chunked_topk(state, self.item_embeddings, min(k, len(self.keys)), excluded)
        kept = torch.isfinite(scores[0])  # fewer candidates than k: drop the -inf tail
        items = [self.keys[i - 1] for i in ids[0][kept].tolist()]
        return Recommendation(items, scores[0][kept].tolist(), unknown)


def main(argv: list[str] | None = None) -> None:
    """``python -m recsys.serving.topk <export dir> <item key> [<item key> ...] [--k 10]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Top-k next items for a history, from an export.")
    parser.add_argument("export_dir")
    parser.add_argument("history", nargs="+", help="item keys, oldest first")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    rec = ExportedRecommender.load(args.export_dir)
    answer = rec.recommend(args.history, k=args.k)
    if answer.unknown:
        print(f"skipped {len(answer.unknown)} unknown item keys: {answer.unknown}")
    for rank, (key, score) in enumerate(zip(answer.items, answer.scores, strict=True), start=1):
        print(f"{rank:>3}  {key}  {score:.4f}")


if __name__ == "__main__":
    main()
