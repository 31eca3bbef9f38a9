"""faiss indexes in serving and evaluation: IndexFlatIP gives the exact path's ids, every kind
is exported and served with the history excluded, the top-k CLI goes through the index,
recall is measured against the exact top-k, faiss stays optional, and the ANN evaluation
metrics are logged under their own names beside unchanged exact ones."""

import json
import sys

import pytest
import torch
from test_serving import WINDOW, N, export_dir, make_export  # noqa: F401  (the fixture)

from recsys.eval.ranking import chunked_topk
from recsys.serving import ann
from recsys.serving.retrieval import Retriever, recall_at_k
from recsys.serving.topk import INDEX_FILE, ExportedRecommender, main

faiss = pytest.importorskip("faiss")
SPECS = {"flat": {}, "hnsw": {"M": 8, "ef_construction": 40, "ef_search": 64},
         "ivf_flat": {"nlist": 8, "nprobe": 8}, "ivf_pq": {"nlist": 4, "nprobe": 4, "pq_m": 4, "pq_nbits": 4}}


def _catalogue(seed=0, items=3000, dim=16, users=64, history=20):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(items + 1, dim, generator=gen)
    table[0] = 0
    states = torch.randn(users, dim, generator=gen)
    excluded = torch.randint(0, items + 1, (users, history), generator=gen)  # duplicates and 0 padding
    return table, states, excluded


def test_faiss_flat_index_gives_exactly_the_exact_paths_items():
    table, states, excluded = _catalogue()
    want_scores, want = chunked_topk(states, table, 10, excluded, chunk_size=777)
    index = ann.build_index(table, "flat")
    found = ann.search(index, states, 10, excluded)  # the index's own order, history dropped
    assert [[i for i in row if i][:10] for row in found.tolist()] == want.tolist()
    scores, ids = Retriever(table, index=index, candidates=10).topk(states, 10, excluded)
    assert torch.equal(ids, want)
    torch.testing.assert_close(scores, want_scores)
    assert recall_at_k(ids, want) == 1.0


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_search_never_returns_an_excluded_item_and_still_fills_k(kind):
    table, states, excluded = _catalogue(items=500)
    index = ann.build_index(table, kind, **SPECS[kind])
    assert index.ntotal == 500
    ids = ann.search(index, states, 10, excluded)
    assert ids.shape == (64, 10 + excluded.shape[1])
    assert not ((ids.unsqueeze(2) == excluded.unsqueeze(1)) & (ids.unsqueeze(2) != 0)).any()
    _, top = Retriever(table, index=index, candidates=10).topk(states, 10, excluded)
    assert bool((top > 0).all()) and not (top.unsqueeze(2) == excluded.unsqueeze(1)).any()
    assert all(len(set(row)) == 10 for row in top.tolist())


def test_hnsw_and_ivf_flat_recall_the_exact_top_10_on_a_small_catalogue():
    table, states, excluded = _catalogue(items=2000)
    _, exact = chunked_topk(states, table, 10, excluded)
    for kind in ("hnsw", "ivf_flat"):
        index = ann.build_index(table, kind, **SPECS[kind])
        _, ids = Retriever(table, index=index).topk(states, 10, excluded)
        assert recall_at_k(ids, exact) >= 0.9, kind


def test_recall_counts_the_exact_items_found_on_a_hand_example():
    exact = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 0, 0]])  # user 3: one exact item
    found = torch.tensor([[4, 3, 10, 11], [8, 12, 13, 14], [9, 1, 2, 0]])
    assert recall_at_k(found, exact) == pytest.approx((2 / 4 + 1 / 4 + 1 / 1) / 3)
    assert recall_at_k(torch.tensor([[1, 2]]), torch.tensor([[2, 1]])) == 1.0  # order does not matter
    assert recall_at_k(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[1, 2, 3]])) == 0.0


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_index_kind_is_exported_loaded_and_served(export_dir, tmp_path, kind):  # noqa: F811
    _, table, encoder = export_dir
    spec = {"kind": kind, **({"nlist": 2, "nprobe": 2, "pq_m": 4, "pq_nbits": 2} if kind == "ivf_pq" else
                             {"nlist": 4, "nprobe": 4} if kind == "ivf_flat" else {})}
    path = make_export(tmp_path / kind, table, encoder, embeddings="int8", index=spec, candidates=N)
    meta = json.loads((path / "export.json").read_text())
    assert meta["index"]["kind"] == kind and meta["index"]["bytes"] == (path / INDEX_FILE).stat().st_size
    rec = ExportedRecommender.load(path)
    assert rec.retriever.kind == "faiss" and rec.retriever.index.ntotal == N
    history = ["k3", "k7", "k1", "k7"]
    answer = rec.recommend(history, k=5)
    exact = ExportedRecommender(rec.item_embeddings, rec.user_encoder, rec.keys, WINDOW)  # exact retrieval
    exact = exact.recommend(history, k=5)
    assert answer.items == exact.items and answer.shortfall is None  # every item is a candidate here


def test_an_index_that_finds_fewer_than_k_items_says_so(export_dir, tmp_path):  # noqa: F811
    _, table, encoder = export_dir
    narrow = {"kind": "ivf_flat", "nlist": 8, "nprobe": 1}  # one list of ~N/8 items searched
    rec = ExportedRecommender.load(make_export(tmp_path / "ivf", table, encoder, index=narrow))
    answer = rec.recommend(["k1"], k=10)
    assert 0 < len(answer.items) < 10 and len(answer.scores) == len(answer.items)
    assert "found by the faiss index, not 10" in answer.shortfall and "nprobe" in answer.shortfall


def test_topk_cli_answers_through_the_index(export_dir, tmp_path, capsys):  # noqa: F811
    path, table, encoder = export_dir
    indexed = make_export(tmp_path / "flat", table, encoder, index={"kind": "flat"})
    main([str(path), "k2", "k5", "--k", "4"])
    exact = capsys.readouterr().out
    main([str(indexed), "k2", "k5", "--k", "4", "--candidates", "4"])
    assert capsys.readouterr().out == exact and len(exact.splitlines()) == 4


def test_without_faiss_the_exact_path_works_and_an_index_names_the_extra(export_dir, tmp_path,  # noqa: F811
                                                                          monkeypatch, capsys):
    path, table, encoder = export_dir
    indexed = make_export(tmp_path / "hnsw", table, encoder, index={"kind": "hnsw"})
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    assert len(ExportedRecommender.load(path).recommend(["k1"], k=3).items) == 3
    with pytest.raises(ImportError, match=r"recsys\[ann\]"):
        ann.build_index(table, "flat")
    with pytest.raises(ImportError, match=r"recsys\[ann\]"):
        ExportedRecommender.load(indexed)
    with pytest.raises(SystemExit) as raised:
        main([str(indexed), "k1"])
    assert raised.value.code == 2 and "recsys[ann]" in capsys.readouterr().err


def test_index_options_that_cannot_work_are_refused_clearly():
    table, *_ = _catalogue(items=100)
    with pytest.raises(ValueError, match="nlist 200 is more than the 100 items"):
        ann.build_index(table, "ivf_flat", nlist=200)
    with pytest.raises(ValueError, match="pq_m 5 must divide the embedding width 16"):
        ann.build_index(table, "ivf_pq", nlist=2, pq_m=5)
    with pytest.raises(ValueError, match="ivf_pq .* training failed"):
        ann.build_index(table, "ivf_pq", nlist=2, pq_m=4, pq_nbits=8)  # 256 centroids, 100 items
    with pytest.raises(ValueError, match="index kind 'annoy'"):
        ann.build_index(table, "annoy")
    with pytest.raises(ValueError, match="binary export generates its candidates"):
        make_export("unused", table[: N + 1], None, embeddings="binary", index={"kind": "flat"})


def _eval_module(ann_spec, seed=0):
    """A small ID-only model in a RecommenderModule (official masking rule), fixed weights."""
    from recsys.adapters.id_embedding import IDEmbeddingTower
    from recsys.models.recommender import SequentialRecommender
    from recsys.models.sasrec import SASRec
    from recsys.train.module import RecommenderModule

    torch.manual_seed(seed)
    model = SequentialRecommender(IDEmbeddingTower(200, d_model=16),
                                  SASRec(d_model=16, num_blocks=1, num_heads=2, ffn_dim=32, max_len=WINDOW))
    return RecommenderModule(model, torch.ones(201), lrs={"adapter": 1e-3, "text_head": 1e-3, "other": 1e-3},
                             mask_target_in_history=True, ann=ann_spec)


def _eval_batches():
    gen = torch.Generator().manual_seed(1)
    users = 96
    history = torch.randint(0, 201, (users, 12), generator=gen)
    target = torch.randint(1, 201, (users,), generator=gen)
    history[:8, 0] = target[:8]  # repeated targets: never a hit under the official rule
    batches = [{"inputs": history[i:i + 32, -WINDOW:], "target": target[i:i + 32],
                "history": history[i:i + 32], "user": torch.arange(i, i + 32)} for i in range(0, users, 32)]
    return torch.utils.data.DataLoader(batches, batch_size=None)  # the batches as they are


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_ann_evaluation_metrics_have_their_own_names_and_leave_the_exact_ones_unchanged(kind):
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    plain = trainer.validate(_eval_module(None), dataloaders=_eval_batches(), verbose=False)[0]
    both = trainer.validate(_eval_module({"kind": kind}), dataloaders=_eval_batches(), verbose=False)[0]
    assert not [key for key in plain if "ann_" in key]
    assert {key: both[key] for key in plain} == plain  # the exact metrics, bit for bit
    assert sorted(key for key in both if key.startswith("val/ann_")) == sorted(
        key.replace("val/", "val/ann_") for key in plain)
    for key in plain:  # both rank all 200 items exactly here (no score ties in float)
        assert both[key.replace("val/", "val/ann_")] == pytest.approx(plain[key], abs=1e-6)
    test = trainer.test(_eval_module({"kind": kind}), dataloaders=_eval_batches(), verbose=False)[0]
    assert test["test/ann_ndcg@10"] == pytest.approx(test["test/ndcg@10"], abs=1e-6)


@pytest.mark.slow
def test_a_run_with_ann_eval_exports_an_index_that_the_topk_cli_serves(tmp_path, run_cli, small_synthetic,
                                                                        cpu_run, id_only):
    common = [f"paths.data_dir={tmp_path / 'data'}", f"paths.root_dir={tmp_path}", *small_synthetic]
    run_dir = tmp_path / "run"
    train = [*common, *cpu_run, *id_only, "eval.ann={kind: flat}", f"hydra.run.dir={run_dir}"]
    run_cli("recsys-train", train, tmp_path)
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    for stage in ("val", "test"):
        exact = {key: v for key, v in metrics[stage].items() if key.split("@")[0] in ("hr", "ndcg", "mrr")}
        assert len(exact) == 9  # @5, @10, @20
        for key, value in exact.items():  # the flat index ranks exactly (no float ties here)
            assert metrics[stage][f"ann_{key}"] == pytest.approx(value, abs=1e-6)
    evaluate = [f"run_dir={run_dir}", "stages=[test]", "accelerator=cpu", "eval.ann={kind: hnsw}"]
    run_cli("recsys-eval", evaluate, tmp_path)
    evaluated = json.loads((run_dir / "eval.json").read_text())
    assert evaluated["eval"]["ann"] == {"kind": "hnsw"} and "ann_ndcg@10" in evaluated["test"]
    export = tmp_path / "export"
    run_cli("recsys-export", [f"run_dir={run_dir}", f"out_dir={export}", "embeddings=int8",
                              "index={kind: hnsw, M: 8}", "candidates=20"], tmp_path)
    meta = json.loads((export / "export.json").read_text())
    assert meta["embeddings"] == "int8" and meta["index"]["kind"] == "hnsw" and meta["index"]["M"] == 8
    out = run_cli("python", ["-m", "recsys.serving.topk", export, "1", "2", "--k", "3"], tmp_path)
    assert len([line for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]) == 3
