"""DDP with 2 CPU processes (gloo): evaluation ranks every user exactly once, so its metrics
equal the single-process ones; training runs and writes one results.json (rank 0)."""

import json
from pathlib import Path

import pytest
import torch

TINY = [
    "data.raw.n_users=203",  # odd: the two evaluation shards differ in size
    "data.raw.n_items=50",
    "data.raw.n_clusters=5",
    "data.raw.max_length=12",
    "data.eval_batch_size=32",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",
]


@pytest.mark.slow
def test_ddp_training_and_sharded_evaluation_match_one_process(tmp_path: Path, run_cli, small_synthetic,
                                                             cpu_run, id_only):
    common = [f"paths.data_dir={tmp_path / 'data'}", f"paths.root_dir={tmp_path}", *small_synthetic, *cpu_run,
              *id_only, *TINY]
    single = tmp_path / "single"
    run_cli("recsys-train", [*common, "trainer.devices=1", f"hydra.run.dir={single}"], tmp_path)

    ddp = tmp_path / "ddp"
    run_cli("recsys-train", [*common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                          "trainer.precision=32-true", "loss.cross_rank_negatives=true",
                          f"hydra.run.dir={ddp}"], tmp_path)
    results = json.loads((ddp / "results.json").read_text())
    assert results["status"] == "complete" and results["config"]["trainer"]["strategy"] == "ddp"
    assert results["config"]["loss"]["cross_rank_negatives"] is True
    assert 0 <= results["metrics"]["test"]["hr@10"] <= 1

    evaluated = {}
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        run_cli("recsys-eval", [f"run_dir={single}", "accelerator=cpu", f"devices={devices}",
                             f"strategy={strategy}"], tmp_path)
        evaluated[devices] = json.loads((single / "eval.json").read_text())
    for stage in ("val", "test"):
        assert evaluated[2][stage] == pytest.approx(evaluated[1][stage], rel=1e-6, abs=1e-9)
        assert evaluated[1][stage]["hr@10"] == pytest.approx(
            json.loads((single / "results.json").read_text())["metrics"][stage]["hr@10"])


@pytest.mark.parametrize(("n", "world"), [(203, 2), (7, 3), (2, 4), (0, 2)])
def test_eval_shards_cover_every_user_exactly_once(n, world):
    from recsys.data.datamodule import EvalShard

    shards = [list(EvalShard(n, rank, world)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _cross_rank_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from recsys.models.loss import in_batch_scores, masked_cross_entropy

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    states, items, emb, log_pop = _global_batch()
    block = slice(rank * 4, (rank + 1) * 4)
    local_emb = emb[block].clone().requires_grad_(True)
    scores = in_batch_scores(states[block], items[block], local_emb, log_pop, cross_rank=True)
    loss = masked_cross_entropy(scores)
    real = int(_predicting(items[block]).sum())
    (loss * real / int(_predicting(items).sum())).backward()  # this rank's share of the global mean
    torch.save({"loss": loss.detach(), "real": real, "grad": local_emb.grad}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _predicting(items: torch.Tensor) -> torch.Tensor:
    return (items[:, :-1] != 0) & (items[:, 1:] != 0)


def _global_batch():
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 30, (8, 6), generator=gen)
    items[1, :3] = 0  # left padding
    items[5, :2] = 0
    return (torch.randn(8, 5, 16, generator=gen), items, torch.randn(8, 6, 16, generator=gen),
            torch.rand(30, generator=gen))


def test_cross_rank_negatives_equal_the_global_batch_loss(tmp_path: Path):
    import torch.multiprocessing as mp

    from recsys.models.loss import in_batch_scores, masked_cross_entropy

    mp.spawn(_cross_rank_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    states, items, emb, log_pop = _global_batch()
    emb.requires_grad_(True)
    whole = masked_cross_entropy(in_batch_scores(states, items, emb, log_pop))  # one process, the 8 users
    whole.backward()
    pooled = sum(p["loss"] * p["real"] for p in parts) / sum(p["real"] for p in parts)
    torch.testing.assert_close(pooled, whole.detach())
    # every rank's gradient reached the owner of the rows: together they are the global gradient
    torch.testing.assert_close(torch.cat([p["grad"] for p in parts]), emb.grad)
    emb = emb.detach()
    local = in_batch_scores(states[:4], items[:4], emb[:4], log_pop, cross_rank=True)  # no group
    torch.testing.assert_close(local, in_batch_scores(states[:4], items[:4], emb[:4], log_pop))
