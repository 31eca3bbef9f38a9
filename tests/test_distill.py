"""Knowledge distillation end to end (recsys.train.distill, distill=kd): a tiny IISAN teacher
(text only, cached MiniLM features) teaches the ID-only SASRec, in-batch and over the full
catalogue; its cost is reported apart and it never reaches the student's checkpoint;
alpha = 0 trains exactly the plain run; a teacher of other data is refused; a distilled run
is restored without its teacher."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CPU_RUN, ID_ONLY, SMALL_SYNTHETIC, job_config

from recsys.cli.train import train
from recsys.train.restore import restore_run
from recsys.train.run_dir import RunDirError

TEACHER = ("adapter=iisan_intra", "encoder/image=none", "adapter.bottleneck=16")
STUDENT_COSTS = ("trainable_params", "total_params", "train_flops_per_step", "peak_activation_bytes",
                 "model_state_bytes", "feature_bytes", "item_flops_per_item", "query_flops")


def _train(data_dir: Path, out: Path, *overrides: str) -> dict:
    overrides = [f"paths.data_dir={data_dir}", *SMALL_SYNTHETIC, *CPU_RUN, *overrides]
    results = train(job_config("train", overrides, out))
    assert results["status"] == "complete"
    return results


def _student(data_dir: Path, out: Path, teacher: Path, *overrides: str) -> dict:
    return _train(data_dir, out, *ID_ONLY, "distill=kd", f"distill.teacher={teacher}", *overrides)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(data dir, run dir, results) of a one-epoch text-only IISAN on the small synthetic data."""
    tmp = tmp_path_factory.mktemp("distill")
    return tmp / "data", tmp / "teacher", _train(tmp / "data", tmp / "teacher", *TEACHER)


@pytest.mark.parametrize("loss", ["in_batch", "full"])
def test_an_id_student_learns_from_an_iisan_teacher_whose_cost_is_reported_apart(teacher, tmp_path, loss):
    data, teacher_dir, teacher_results = teacher
    copy = tmp_path / "teacher"  # the student's own copy: removed below
    shutil.copytree(teacher_dir, copy)
    run = tmp_path / "student"
    results = _student(data, run, copy, f"loss.name={loss}", "distill.alpha=0.7", "distill.tau=3")
    assert all(math.isfinite(v) for v in results["metrics"]["test"].values())
    assert results["distill"] == {
        "teacher": str(copy), "checkpoint": str(copy / "checkpoints" / "best.ckpt"), "alpha": 0.7, "tau": 3.0,
        "teacher_method": "iisan_intra", "teacher_test": teacher_results["metrics"]["test"],
    }
    eff = results["efficiency"]
    assert eff["teacher_run"] == str(copy) and eff["teacher_flops_per_step"] > 0
    batch = eff["train_flops_per_step"] / eff["train_flops_per_sequence"]  # counted on the same batch
    assert eff["teacher_flops_per_sequence"] == pytest.approx(eff["teacher_flops_per_step"] / batch)
    assert eff["teacher_params"] == teacher_results["efficiency"]["total_params"]
    assert eff["teacher_model_state_bytes"] == 4 * eff["teacher_params"]  # fp32 weights, no grads or moments
    assert eff["teacher_feature_bytes"] > 0  # its cached text features
    assert eff["feature_bytes"] == 0 and eff["trainable_params"] < eff["teacher_params"]  # the student's own
    # the teacher is not part of the student: not in its checkpoint, and a distilled run is
    # restored (recsys-eval, recsys-export) without it
    shutil.rmtree(copy)
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert not [k for k in state["state_dict"] if not k.startswith("model.")]
    restored = restore_run(run)
    assert restored.module.teacher is None and restored.config.distill.teacher == str(copy)


def test_alpha_zero_trains_exactly_the_plain_run(teacher, tmp_path):
    data, teacher_dir, _ = teacher
    plain = _train(data, tmp_path / "plain", *ID_ONLY)
    distilled = _student(data, tmp_path / "kd0", teacher_dir, "distill.alpha=0")
    assert distilled["metrics"] == plain["metrics"]
    weights = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True)["state_dict"] for run in ("plain", "kd0")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # the student's own counted costs are those of the plain run: the teacher is counted apart
    for key in STUDENT_COSTS:
        assert distilled["efficiency"][key] == plain["efficiency"][key], key


def test_a_teacher_trained_on_other_data_is_refused(teacher, tmp_path):
    data, _, _ = teacher
    other = tmp_path / "other_data"
    _train(other, tmp_path / "other_teacher", *ID_ONLY, "data.raw.seed=5")  # other interactions
    with pytest.raises(RunDirError, match="was trained on other data than this run") as raised:
        _student(data, tmp_path / "student", tmp_path / "other_teacher")
    for named in (other, data):  # both datasets
        assert str(named / "processed" / "synthetic") in str(raised.value)
    failed = json.loads((tmp_path / "student" / "results.json").read_text())
    assert failed["status"] == "failed" and not (tmp_path / "student" / "checkpoints").exists()
