"""Approximate nearest-neighbour indexes of an item table through faiss (optional extra).

faiss is not a core dependency: ``pip install 'recsys[ann]'`` installs ``faiss-cpu``
(``make install`` does); on a CUDA machine the ``faiss-gpu`` build provides the same
``faiss`` module. It is imported only when an index is built, loaded or searched, so the
exact path (``recsys.eval.ranking.chunked_topk``) works without it; asking for an index
without it raises an ``ImportError`` naming the extra.

An index holds items ``1..N`` of a table ``[N+1, d]`` (faiss id ``i`` is item ``i + 1``;
the padding row 0 is left out) and scores by inner product, as the model does. Kinds (each
a function below whose typed keyword parameters are its options: ``recsys-export
index={kind: hnsw, ef_search: 256}``, ``eval.ann={kind: ivf_flat, nlist: 256}``, checked by
``recsys.config.schema``):

- ``flat``: ``IndexFlatIP``, exact (brute force in faiss);
- ``hnsw``: ``IndexHNSWFlat`` (graph; ``M`` links per node, ``ef_construction`` /
  ``ef_search`` the candidate lists when building / searching);
- ``ivf_flat``: ``IndexIVFFlat`` (k-means into ``nlist`` lists, ``nprobe`` of them scanned);
- ``ivf_pq``: ``IndexIVFPQ`` (as ivf_flat with vectors product-quantised into ``pq_m``
  sub-vectors of ``pq_nbits`` bits each; ``pq_m`` divides d).

The search parameters (``ef_search``, ``nprobe``) are stored in the index itself (faiss
serialises them), so a loaded index searches as it was built.

History exclusion (``search``): the index is asked for ``k + H`` neighbours, ``H`` the width
of the excluded ids ``[B, H]`` (at least the number of distinct ones), and the excluded ids
are dropped from the answer, so at least ``k`` non-excluded items remain whenever the index
finds ``k + H``. (faiss's ``IDSelector`` search parameters would filter inside the search,
but take one selector per query, i.e. one search call per user; the over-fetch keeps the
batch in one call.) An index can find fewer than asked (IVF with a small ``nprobe`` on tiny
lists): those places hold id 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

EXTRA = "pip install 'recsys[ann]' (faiss-cpu; faiss-gpu on a CUDA machine)"


def require_faiss() -> Any:
    """The ``faiss`` module, or an ImportError saying how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(f"an ANN index needs faiss, which is not installed: {EXTRA}") from err
    return faiss


def flat(dim: int) -> Any:
    """Exact inner-product search: ``IndexFlatIP``."""
    return require_faiss().IndexFlatIP(dim)


def hnsw(dim: int, M: int = 32, ef_construction: int = 200, ef_search: int = 128) -> Any:
    """HNSW graph over the raw vectors, inner product: ``IndexHNSWFlat``."""
    faiss = require_faiss()
    index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    return index


def ivf_flat(dim: int, nlist: int = 1024, nprobe: int = 16) -> Any:
    """Inverted lists of raw vectors, inner product: ``IndexIVFFlat``."""
    faiss = require_faiss()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = nprobe
    return index


def ivf_pq(dim: int, nlist: int = 1024, nprobe: int = 16, pq_m: int = 16, pq_nbits: int = 8) -> Any:
    """Inverted lists of product-quantised vectors, inner product: ``IndexIVFPQ``."""
    faiss = require_faiss()
    if dim % pq_m:
        raise ValueError(f"pq_m {pq_m} must divide the embedding width {dim}")
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, pq_nbits, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = nprobe
    return index


#: Index kind -> its builder; the builder's parameters after ``dim`` are the kind's options.
INDEX_KINDS = {"flat": flat, "hnsw": hnsw, "ivf_flat": ivf_flat, "ivf_pq": ivf_pq}


def build_index(items: Tensor, kind: str, **options: Any) -> Any:
    """A trained faiss index of ``kind`` holding items ``1..N`` of ``items [N+1, d]``
    (float; row 0, the padding item, is left out); ``options`` are the kind's."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind {kind!r} is not one of {sorted(INDEX_KINDS)}")
    vectors = items[1:].detach().float().cpu().contiguous().numpy()
    index = INDEX_KINDS[kind](vectors.shape[1], **options)
    if not index.is_trained:
        nlist = require_faiss().extract_index_ivf(index).nlist
        if nlist > len(vectors):
            raise ValueError(f"{kind}: nlist {nlist} is more than the {len(vectors)} items; lower nlist")
        try:
            index.train(vectors)
        except RuntimeError as err:  # e.g. fewer items than the 2^pq_nbits PQ centroids
            raise ValueError(f"{kind} {options}: training failed: {str(err).splitlines()[0]}") from None
    index.add(vectors)
    return index


def search(index: Any, queries: Tensor, k: int, excluded: Tensor | None = None) -> Tensor:
    """Item ids long ``[B, min(k + H, N)]`` of the best-scoring items for ``queries [B, d]``,
    best first as the index ranks them; ids in ``excluded [B, H]`` (0 = padding) and the places
    the index left empty are 0 (see the module docstring)."""
    width = 0 if excluded is None else excluded.shape[1]
    wanted = min(k + width, index.ntotal)
    _, labels = index.search(queries.detach().float().cpu().contiguous().numpy(), wanted)
    ids = torch.from_numpy(labels).long() + 1  # faiss's -1 (nothing found) becomes 0
    if width:  # membership by binary search in each sorted row: O(B (k + H) log H) time and memory
        ordered = excluded.cpu().long().sort(dim=1).values
        at = torch.searchsorted(ordered, ids).clamp_(max=width - 1)
        ids.masked_fill_(ordered.gather(1, at) == ids, 0)
    return ids


def save_index(index: Any, path: str | Path) -> None:
    require_faiss().write_index(index, str(path))


def load_index(path: str | Path) -> Any:
    return require_faiss().read_index(str(path))


def index_bytes(index: Any) -> int:
    """Size of the serialised index (what it costs on disk)."""
    return int(require_faiss().serialize_index(index).size)
