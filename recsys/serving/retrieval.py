"""Top-k items for user states: exact, or candidates (Hamming codes, faiss index) re-ranked exactly.

``Retriever(table)`` answers by the exact chunked full scan (``chunked_topk``). Given sign
codes (the binary export format, ``recsys.serving.formats``) or a faiss index
(``recsys.serving.ann``), it generates ``max(k, candidates)`` candidates per user, the
excluded ids (the history) left out, by the fewest differing sign bits or by the index's
search, and re-ranks them by their exact dot products with ``table``; so the scores are
always the model's, and only which items reach the re-rank is approximate.

``recall_at_k`` compares an approximate top-k with the exact one; ``retrieved_ranks`` gives
the target's rank in a retrieved top-k, for HR / NDCG through an index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recsys.eval.ranking import chunked_topk, mask_repeated_targets, top_k_of
from recsys.serving import ann
from recsys.serving.formats import hamming, pack_signs

#: Hamming pairs (user x item) scored per chunk: bounds the int64 temporaries to ~32 MB each.
HAMMING_PAIRS = 2**22


def _minus_hamming(query_codes: Tensor, item_codes: Tensor) -> Tensor:
    """Scores ``[B, C]`` for ``chunked_topk``: minus the Hamming distance (fewest bits best)."""
    return -hamming(query_codes, item_codes).float()


def rerank(states: Tensor, table: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The best ``k`` of candidate ``ids [B, C]`` (``C >= k``; 0 = no candidate) by their exact
    scores ``states [B, d] . table[id]``: (scores ``[B, k]`` descending, ids ``[B, k]``); places
    left without a candidate hold id 0 and score ``-inf``."""
    states = states.to(device=table.device, dtype=table.dtype)
    ids = ids.to(table.device)
    scores = torch.einsum("bd,bcd->bc", states, table[ids]).masked_fill_(ids == 0, float("-inf"))
    return top_k_of(scores, ids, k)


class Retriever:
    """Top-k over an item table, exact or through candidates.

    Args:
        table: float ``[N+1, d]``, the item table scored with (row 0 = padding).
        codes: int64 ``[N+1, W]`` sign codes of ``table`` (``formats.pack_signs``):
            candidates by Hamming distance.
        index: a faiss index of items ``1..N`` (``ann.build_index``): candidates by its search.
        candidates: candidates re-ranked per user (at least ``k`` are).
        chunk_size: items scored per matmul on the exact path.
    """

    def __init__(self, table: Tensor, codes: Tensor | None = None, index: Any = None,
                 candidates: int = 100, chunk_size: int = 65536) -> None:
        if codes is not None and index is not None:
            raise ValueError("give sign codes or a faiss index as the candidate generator, not both")
        self.table, self.codes, self.index = table, codes, index
        self.candidates, self.chunk_size = candidates, chunk_size

    @property
    def kind(self) -> str:
        """``exact``, ``binary`` or ``faiss``."""
        return "binary" if self.codes is not None else "faiss" if self.index is not None else "exact"

    def topk(self, states: Tensor, k: int, excluded: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(scores ``[B, k]`` descending, item ids ``[B, k]``) for user ``states [B, d]``,
        never an id of ``excluded [B, H]``; ``k`` at most N. Places left without an item (fewer
        than ``k`` candidates outside ``excluded``) hold id 0 and score ``-inf``."""
        num_items = self.table.shape[0] - 1
        if self.kind == "exact":
            scores, ids = chunked_topk(states, self.table, k, excluded, self.chunk_size)
            return scores, ids.masked_fill(scores == float("-inf"), 0)
        pool = min(max(k, self.candidates), num_items)
        if self.kind == "faiss":
            ids = ann.search(self.index, states, pool, excluded)
        else:
            chunk = max(1, HAMMING_PAIRS // (states.shape[0] * self.codes.shape[1]))
            codes = pack_signs(states.to(self.codes.device))
            far, ids = chunked_topk(codes, self.codes, pool, excluded, chunk, score=_minus_hamming)
            ids = ids.masked_fill(far == float("-inf"), 0)
        return rerank(states, self.table, ids, k)


def recall_at_k(found: Tensor, exact: Tensor) -> float:
    """Mean over users of the share of the exact top-k ids ``exact [B, k]`` that ``found
    [B, k']`` holds (0 = no item, never counted); users with no exact item are skipped."""
    exact, found = exact.cpu(), found.cpu()
    real = exact != 0
    hits = ((exact.unsqueeze(2) == found.unsqueeze(1)).any(dim=2) & real).sum(dim=1)
    counted = real.sum(dim=1) > 0
    return float((hits[counted] / real.sum(dim=1)[counted]).mean()) if counted.any() else float("nan")


def retrieved_ranks(retriever: Retriever, user_emb: Tensor, target: Tensor, history: Tensor, k: int,
                    mask_target: bool) -> Tensor:
    """1-based rank ``[B]`` of each target in its user's retrieved top ``k`` (``N + 1`` when it
    is not there), the history excluded as the exact evaluator does
    (``recsys.eval.ranking.full_ranking_ranks``): a target repeating a history item is ranked
    like any other item, or, with ``mask_target``, gets ``N + 1``. Ranks above ``k`` are
    unknown, so only metrics at cut-offs up to ``k`` are meaningful."""
    num_items = retriever.table.shape[0] - 1
    target, history = target.cpu().long(), history.cpu().long()
    excluded = history.masked_fill(history == target.unsqueeze(1), 0)  # the target stays a candidate
    _, ids = retriever.topk(user_emb, k, excluded)
    at = ids.cpu() == target.unsqueeze(1)
    ranks = torch.where(at.any(dim=1), at.long().argmax(dim=1) + 1, num_items + 1)
    return mask_repeated_targets(ranks, target, history, num_items) if mask_target else ranks
