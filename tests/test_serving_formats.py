"""Item-table formats of an export (float32, float16, int8, binary): written, read back within
their error bounds, and served; sign codes and Hamming distances against brute force."""

import json

import pytest
import torch
from test_serving import export_dir, make_export  # noqa: F401  (the fixture)

from recsys.eval.ranking import chunked_topk
from recsys.serving.formats import (
    FORMATS,
    decode,
    dequantize_int8,
    encode,
    hamming,
    pack_signs,
    popcount,
    quantize_int8,
    unpack_signs,
)
from recsys.serving.retrieval import Retriever
from recsys.serving.topk import TABLE_FILE, ExportedRecommender

DTYPES = {"float32": {"item_embeddings": torch.float32},
          "float16": {"item_embeddings": torch.float16},
          "int8": {"item_embeddings": torch.int8, "item_scales": torch.float32},
          "binary": {"item_embeddings": torch.int8, "item_scales": torch.float32, "item_codes": torch.int64}}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_written_read_back_and_served(export_dir, tmp_path, fmt):  # noqa: F811
    from safetensors.torch import load_file

    _, table, encoder = export_dir
    path = make_export(tmp_path / fmt, table, encoder, embeddings=fmt, candidates=12)
    meta = json.loads((path / "export.json").read_text())
    assert meta["embeddings"] == fmt and meta["index"] is None and meta["candidates"] == 12
    tensors = load_file(path / TABLE_FILE)
    assert {name: t.dtype for name, t in tensors.items()} == DTYPES[fmt]
    assert meta["bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())
    rec = ExportedRecommender.load(path)
    assert rec.item_embeddings.dtype == torch.float32
    torch.testing.assert_close(rec.item_embeddings, decode(encode(table, fmt), fmt))
    assert rec.retriever.kind == ("binary" if fmt == "binary" else "exact")
    history = ["k3", "k7", "k1"]
    answer = rec.recommend(history, k=5)
    assert len(answer.items) == 5 and not set(answer.items) & set(history)
    assert answer.scores == sorted(answer.scores, reverse=True)


def test_int8_and_float16_round_trips_stay_within_their_bounds():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(500, 64, generator=gen) * torch.rand(500, 1, generator=gen) * 10
    table[0] = 0
    codes, scales = quantize_int8(table)
    assert codes.dtype == torch.int8 and int(codes.abs().max()) == 127 and scales[0] == 0
    error = (dequantize_int8(codes, scales) - table).abs()
    assert bool((error <= table.abs().amax(dim=1, keepdim=True) / 254 + 1e-6).all())  # half a step
    assert error[0].abs().sum() == 0  # the padding row stays zero
    half = decode(encode(table, "float16"), "float16")
    assert bool(((half - table).abs() <= table.abs() * 2**-11 + 1e-7).all())


@pytest.mark.parametrize("dim", [3, 64, 70, 130])
def test_sign_codes_pack_and_unpack_exactly_and_hamming_matches_brute_force(dim):
    gen = torch.Generator().manual_seed(dim)
    items, queries = torch.randn(40, dim, generator=gen), torch.randn(6, dim, generator=gen)
    items[0] = 0  # no bit set
    codes = pack_signs(items)
    assert codes.shape == (40, -(-dim // 64)) and codes.dtype == torch.int64
    assert torch.equal(unpack_signs(codes, dim), items > 0)
    want = ((queries > 0).unsqueeze(1) != (items > 0).unsqueeze(0)).sum(dim=2)
    assert torch.equal(hamming(pack_signs(queries), codes), want)
    signs = lambda x: (x > 0).float() * 2 - 1  # noqa: E731
    torch.testing.assert_close((signs(queries) @ signs(items).T), (dim - 2 * want).float())


def test_popcount_counts_every_bit_of_signed_words():
    words = torch.tensor([0, 1, -1, -(2**63), 2**63 - 1, 0x0F0F, -2])
    assert popcount(words).tolist() == [0, 1, 64, 1, 63, 8, 63]


def test_binary_candidates_reranked_exactly_equal_the_exact_top_k_when_all_are_candidates():
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(201, 16, generator=gen)
    states = torch.randn(9, 16, generator=gen)
    excluded = torch.randint(0, 201, (9, 7), generator=gen)
    want = chunked_topk(states, table, 10, excluded)
    got = Retriever(table, codes=pack_signs(table), candidates=200).topk(states, 10, excluded)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0])
    few = Retriever(table, codes=pack_signs(table), candidates=20).topk(states, 10, excluded)[1]
    assert not (few.unsqueeze(2) == excluded.unsqueeze(1)).any() and bool((few > 0).all())


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="embedding format 'int4'"):
        encode(torch.zeros(2, 4), "int4")
