"""End-to-end runs of every entry point (console scripts, as a user runs them) on a small
synthetic dataset with both real pretrained encoders (MiniLM text, EfficientNet-Lite0 images).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SMALL_SYNTHETIC = [
    "data=synthetic",
    "data.raw.n_users=120",
    "data.raw.n_items=60",
    "data.raw.n_clusters=6",
    "data.raw.max_length=14",
    "data.raw.image_size=32",
]


def _run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.mark.slow
def test_prep_cache_train_eval_chain(workdir: Path):
    common = [f"paths.data_dir={workdir / 'data'}", f"paths.root_dir={workdir}", *SMALL_SYNTHETIC]
    _run("recsys-prep", common, workdir)
    stats = json.loads((workdir / "data/processed/synthetic/stats.json").read_text())
    assert stats["users"] == 120 and stats["items"] > 0

    out = _run(
        "recsys-cache", [*common, "encoder.text.batch_size=64", "encoder.image.batch_size=32"], workdir
    )
    assert "minilm" in out.stdout and "efficientnet_lite0" in out.stdout
    manifest = json.loads((workdir / "data/cache/synthetic/minilm.json").read_text())
    assert manifest["complete"] and manifest["shape"] == [stats["items"] + 1, 7, 384]

    run_dir = workdir / "run"
    out = _run(
        "recsys-train",
        [
            *common,
            "trainer.max_epochs=2",
            "logger=csv",
            "trainer.accelerator=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        workdir,
    )
    assert "HR@10" in out.stdout and "popularity" in out.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["method"] == "iisan"
    assert set(results["metrics"]["test"]) >= {"hr@10", "ndcg@10", "mrr@10", "hr@5", "hr@20"}
    assert 0 <= results["metrics"]["test"]["hr@10"] <= 1
    eff = results["efficiency"]
    assert eff["epochs"] == 2 and eff["s_per_epoch"] > 0 and eff["trainable_params"] > 0
    assert eff["peak_train_memory_bytes"] > 0 and eff["cache_build_s"] > 0
    assert eff["cache_bytes"] > 0 and eff["item_latency_ms"] > 0 and eff["user_batch_latency_ms"] > 0
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()

    # Resumable sweeps: the same job again is skipped, its results untouched.
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    out = _run("recsys-train", [*common, "trainer.max_epochs=2", "logger=csv", "trainer.accelerator=cpu",
                                f"hydra.run.dir={run_dir}"], workdir)
    assert "already complete" in out.stdout + out.stderr
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp

    # The same job in a new directory: the same metrics to the last bit (same seed, same machine).
    again = workdir / "run_again"
    _run("recsys-train", [*common, "trainer.max_epochs=2", "logger=csv", "trainer.accelerator=cpu",
                          f"hydra.run.dir={again}"], workdir)
    assert json.loads((again / "results.json").read_text())["metrics"] == results["metrics"]

    _run("recsys-eval", [f"run_dir={run_dir}", "stages=[test]", "accelerator=cpu"], workdir)
    evaluated = json.loads((run_dir / "eval.json").read_text())
    assert evaluated["test"]["hr@10"] == pytest.approx(results["metrics"]["test"]["hr@10"])
    assert evaluated["test"]["ndcg@10"] == pytest.approx(results["metrics"]["test"]["ndcg@10"])

    _run("recsys-export", [f"run_dir={run_dir}", f"out_dir={workdir / 'export'}"], workdir)
    meta = json.loads((workdir / "export" / "export.json").read_text())
    assert meta["num_items"] == stats["items"] and meta["method"] == "iisan"
    out = _run("python", ["-m", "recsys.serving.topk", str(workdir / "export"), "1", "2", "nope", "--k", "3"],
               workdir)
    assert "skipped 1 unknown item keys: ['nope']" in out.stdout
    assert len([line for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]) == 3
