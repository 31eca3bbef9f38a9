"""Answer "which items next, for this history?" from an export alone (recsys/serving/export.py).

    >>> rec = ExportedRecommender.load("outputs/export/movielens_iisan")
    >>> rec.recommend(["50", "181", "258"], k=5)        # item keys of the dataset, oldest first
    Recommendation(items=[...], scores=[...], unknown=[], shortfall=None)

The user encoder is looked up by name in the user-encoder registry (never imported from a
string in the file) and its weights come from safetensors: loading an export runs no code
from it. This module imports nothing of Lightning or Hydra: a server needs torch, polars and
safetensors only.

Scoring is the training model's: the last ``window`` known items of the history, left-padded,
go through the user encoder; the state at the last position is dotted with every item
embedding; items of the history are excluded by default. The item table is read back as
float32 whatever the export's format (``recsys.serving.formats``: float32, float16, int8,
binary). The top k come from the export's retrieval (``recsys.serving.retrieval``): the exact
``chunked_topk`` (memory bounded by the chunk, whatever the catalogue size), or, for a binary
export or one holding a faiss index (``recsys.serving.ann``), ``candidates`` per query by
Hamming distance or by the index, re-ranked exactly; the history is excluded from the
candidates (the index over-fetches k + history length and drops it). History keys are
compared with surrounding whitespace stripped (``" 50"`` is ``"50"``); an empty key is an
error naming its position. When fewer than k items can be recommended (k above the catalogue
size, or most of it in the history, or an approximate index that found fewer), the answer
holds what there is and ``shortfall`` says why; when the history covers the whole catalogue,
no items at all.

The command line (``main``) prints one ``rank key score`` line per item on stdout, and the
shortfall, if any, on stderr. Exit status: 0 with at least one item; 1 when no item is left
to recommend (every catalogue item is in the history); 2 for bad input (arguments, an empty
key, a history with no known item, an export that cannot be loaded, e.g. one holding a faiss
index where faiss is not installed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file

from recsys.models import USER_ENCODERS, build_user_encoder
from recsys.serving import ann
from recsys.serving.formats import decode
from recsys.serving.retrieval import Retriever

#: Version of the export layout (``recsys.serving.export`` writes it, this module reads it).
FORMAT_VERSION = 3
#: The item table (tensors of its format) and the optional faiss index, inside an export.
TABLE_FILE, INDEX_FILE = "item_embeddings.safetensors", "item_index.faiss"


@dataclass
class Recommendation:
    """Top-k answer: item keys and scores, best first, the history keys not in the export, and
    why fewer than the k items asked for came back (``None`` when all k did)."""

    items: list[str]
    scores: list[float]
    unknown: list[str] = field(default_factory=list)
    shortfall: str | None = None


def history_keys(history: Sequence[object]) -> list[str]:
    """The history's item keys as strings with surrounding whitespace stripped; an empty key
    (``""``, ``" "``) raises naming its position (1-based)."""
    keys = [str(key).strip() for key in history]
    empty = [position for position, key in enumerate(keys, start=1) if not key]
    if empty:
        raise ValueError(f"empty item key at position {', '.join(map(str, empty))} of the history "
                         f"({len(keys)} keys): {list(map(str, history))[:10]}")
    return keys


def shortfall(k: int, num_items: int, num_excluded: int) -> str | None:
    """Why fewer than ``k`` of ``num_items`` catalogue items can be recommended when
    ``num_excluded`` of them are excluded (the history); ``None`` when ``k`` can be."""
    candidates = num_items - num_excluded
    if k <= candidates:
        return None
    if candidates == 0:
        return f"no items left to recommend: all {num_items} catalogue items are in the history"
    in_history = f", {num_excluded} of them in the history" if num_excluded else ""
    return f"{candidates} items to recommend, not {k}: {num_items} items in the catalogue{in_history}"


class ExportedRecommender:
    """Item table float32 [N+1, d] + user encoder, with the key <-> id mapping of the
    catalogue; ``retriever`` answers the top k (default: exact over ``item_embeddings``)."""

    def __init__(self, item_embeddings: torch.Tensor, user_encoder: torch.nn.Module,
                 keys: list[str], window: int, retriever: Retriever | None = None) -> None:
        self.item_embeddings = item_embeddings
        self.user_encoder = user_encoder.eval()
        self.keys = keys  # keys[i - 1] = key of item i
        self.ids = {k: i + 1 for i, k in enumerate(keys)}
        self.window = window
        self.retriever = retriever or Retriever(item_embeddings)

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
        tensors = load_file(export_dir / TABLE_FILE)
        table = decode(tensors, meta["embeddings"])
        items = pl.read_parquet(export_dir / "items.parquet").sort("item_id")
        if items.height != meta["num_items"] or table.shape[0] != meta["num_items"] + 1:
            raise ValueError(f"{export_dir}: items.parquet, item_embeddings and export.json disagree "
                             f"on the number of items; re-export the run")
        index = ann.load_index(export_dir / INDEX_FILE) if meta["index"] else None
        retriever = Retriever(table, tensors.get("item_codes"), index, int(meta["candidates"]))
        return cls(table, encoder, [str(k) for k in items["key"]], int(meta["window"]), retriever)

    def recommend(self, history: Sequence[object], k: int = 10,
                  exclude_history: bool = True) -> Recommendation:
        """Top ``k`` next items for ``history`` (item keys, oldest first; see ``history_keys``).

        Keys the export does not know are skipped and listed in ``unknown``; an empty known
        history, an empty key or ``k < 1`` raises. With fewer than ``k`` candidates (the
        catalogue minus the excluded history) all of them come back, best first, and
        ``shortfall`` says why; with none, ``items`` is empty.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        keys = history_keys(history)
        known = [self.ids[key] for key in keys if key in self.ids]
        unknown = [key for key in keys if key not in self.ids]
        if not known:
            raise ValueError(f"none of the history items {keys[:10]} is in the exported catalogue")
        num_excluded = len(set(known)) if exclude_history else 0
        missing = shortfall(k, len(self.keys), num_excluded)
        candidates = len(self.keys) - num_excluded
        if candidates == 0:
            return Recommendation([], [], unknown, missing)
        inputs = torch.zeros(1, self.window, dtype=torch.long)
        recent = known[-self.window:]
        inputs[0, self.window - len(recent):] = torch.tensor(recent)
        excluded = torch.tensor([known]) if exclude_history else None
        with torch.no_grad():
            state = self.user_encoder(self.item_embeddings[inputs], inputs != 0)[:, -1]  # [1, d]
            scores, ids = self.retriever.topk(state, min(k, candidates), excluded)
        found = ids[0] != 0
        if missing is None and not bool(found.all()):
            missing = (f"{int(found.sum())} items found by the {self.retriever.kind} index, not {k}: "
                       f"search it wider (nprobe, ef_search) or re-export with more candidates")
        items = [self.keys[i - 1] for i in ids[0][found].tolist()]
        return Recommendation(items, scores[0][found].tolist(), unknown, missing)


def main(argv: list[str] | None = None) -> None:
    """``python -m recsys.serving.topk <export dir> <item key> [<item key> ...] [--k 10] [--candidates C]``.

    Exit status 0 with at least one item, 1 when none is left to recommend, 2 for bad input
    (see the module docstring).
    """
    import argparse

    parser = argparse.ArgumentParser(description="Top-k next items for a history, from an export.")
    parser.add_argument("export_dir")
    parser.add_argument("history", nargs="+", help="item keys, oldest first (surrounding spaces ignored)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=None,
                        help="binary / index exports: candidates re-ranked per query (default: the export's)")
    args = parser.parse_args(argv)
    if args.candidates is not None and args.candidates < 1:
        parser.error(f"--candidates must be at least 1, got {args.candidates}")
    try:
        rec = ExportedRecommender.load(args.export_dir)
        if args.candidates is not None:
            rec.retriever.candidates = args.candidates
        answer = rec.recommend(args.history, k=args.k)
    except (FileNotFoundError, ImportError, ValueError) as err:
        parser.error(str(err))
    if answer.unknown:
        print(f"skipped {len(answer.unknown)} unknown item keys: {answer.unknown}")
    for rank, (key, score) in enumerate(zip(answer.items, answer.scores, strict=True), start=1):
        print(f"{rank:>3}  {key}  {score:.4f}")
    if answer.shortfall:
        print(answer.shortfall, file=sys.stderr)
    if not answer.items:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
