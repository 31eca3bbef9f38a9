"""Knowledge distillation: a frozen teacher run scores the same candidates as the student.

    recsys-train experiment=demo adapter=id distill=kd distill.teacher=outputs/demo/<time> \
        distill.alpha=0.5 distill.tau=2

The student is this run's model (any tower: a smaller IISAN, CROSSAN, one modality, the ID
tower); the teacher is any finished ``recsys-train`` run on the same dataset. Each training
step minimises (``recsys.models.loss.distillation_loss``)

    (1 - α)·CE(s) + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ))

over the student's candidates (the in-batch ones, or the whole catalogue with
``loss.name=full``), with the student's mask: the teacher's logits ``t`` [V,C] come from
``SequentialRecommender.training_scores`` called with the student's own arguments (loss,
history masking, DDP candidates, trained positions, and the student's ``log_pop``), and the
mask and labels depend on those arguments alone. In-batch, both logits are corrected by the
same ``- log(train popularity)``: the two softmaxes are over the same corrected scores.

- ``load_teacher``: ``restore_run(teacher, "best")`` (weights-only loading, its config checked
  as untrusted, its data and caches against what it was trained on), then its data
  fingerprint must be this run's (item ids must mean the same items) and its window at least
  this run's; ``RunDirError`` naming both otherwise. Restoring builds a model (random init
  before the weights load) inside ``torch.random.fork_rng``: the student draws the same
  random numbers as without a teacher, so α = 0 trains exactly the plain run.
- ``Teacher``: frozen (``eval()``, ``requires_grad_(False)``, ``torch.no_grad()``); a plain
  object, not an ``nn.Module``, held by ``RecommenderModule.teacher``: never in the student's
  ``state_dict`` (checkpoints), parameters, optimiser groups or trainable-parameter count,
  and not moved by Lightning (``logits`` moves it to the batch's device).
- ``teacher_costs``: the teacher's counted cost, reported apart from the student's
  (``teacher_*`` efficiency keys); ``student_alone``: the student's own counted costs are
  measured without the teacher, so they mean what they mean for a plain run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.models.recommender import SequentialRecommender
from recsys.train.cost import count_flops, feature_bytes, model_state_bytes
from recsys.train.module import RecommenderModule
from recsys.train.restore import restore_run
from recsys.train.run_dir import RunDirError

log = logging.getLogger(__name__)


class Teacher:
    """A frozen trained recommender that scores a student's candidates.

    Args:
        model: the teacher's item tower + user encoder (frozen here).
        alpha / tau: the distillation loss's weight of the KL term and its temperature.
        run_dir / checkpoint: where it was restored from.
        results: its results.json (method, test metrics).
    """

    def __init__(self, model: SequentialRecommender, alpha: float, tau: float, run_dir: Path,
                 checkpoint: Path, results: Mapping[str, Any] | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.alpha, self.tau = float(alpha), float(tau)
        self.run_dir, self.checkpoint = run_dir, checkpoint
        self.results = dict(results or {})

    def logits(self, batch_items: torch.Tensor, **options: Any) -> torch.Tensor:
        """The teacher's logits [V,C] over the candidates of ``batch_items`` [B,W+1];
        ``options``: the student's ``training_scores`` arguments (``log_pop``, ``loss``,
        ``mask_history``, ``cross_rank_negatives``, ``predict``). No gradient, no randomness."""
        if next(self.model.parameters()).device != batch_items.device:
            self.model.to(batch_items.device)
        with torch.no_grad():
            return self.model.training_scores(batch_items, **options).logits

    def record(self) -> dict[str, Any]:
        """results.json's ``distill``: the teacher, its checkpoint, α, τ, and the teacher's
        method and test metrics as its own results.json records them."""
        return {
            "teacher": str(self.run_dir),
            "checkpoint": str(self.checkpoint),
            "alpha": self.alpha,
            "tau": self.tau,
            "teacher_method": self.results.get("method"),
            "teacher_test": (self.results.get("metrics") or {}).get("test"),
        }


def load_teacher(distill: Mapping[str, Any], dm: SequenceDataModule) -> Teacher:
    """The frozen teacher of ``distill`` (``{"teacher", "alpha", "tau"}``) for a student
    trained on ``dm``; consumes no random numbers.

    Raises:
        RunDirError: it cannot be restored, or was trained on other data than ``dm`` or on a
            shorter window.
    """
    run_dir = Path(distill["teacher"]).resolve()
    with torch.random.fork_rng(devices=[]):
        try:
            restored = restore_run(run_dir, "best")
        except RunDirError as err:
            raise RunDirError(f"distill.teacher: cannot restore the teacher in {run_dir}: {err}") from None
    theirs, ours = restored.datamodule.data_fingerprint, dm.data_fingerprint
    if theirs != ours:
        raise RunDirError(
            f"distill.teacher: {run_dir} was trained on other data than this run: its data "
            f"{restored.datamodule.processed_dir} ({restored.config.data.name}, fingerprint "
            f"{theirs[:12]}) is not this run's {dm.processed_dir} (fingerprint {ours[:12]}), so their "
            "item ids do not mean the same items; distil from a teacher trained on this run's dataset"
        )
    window = int(restored.config.data.protocol.window)
    if window < dm.window:
        raise RunDirError(
            f"distill.teacher: {run_dir} was trained on windows of {window} items, shorter than this "
            f"run's {dm.window} (data.protocol.window): its user encoder cannot read them; train the student "
            f"with data.protocol.window={window} or less"
        )
    teacher = Teacher(restored.module.model, distill["alpha"], distill["tau"], run_dir, restored.checkpoint,
                      restored.results)
    log.info("distilling from %s (%s, %s): alpha %s, tau %s", run_dir, teacher.results.get("method"),
             restored.checkpoint.name, teacher.alpha, teacher.tau)
    return teacher


@contextmanager
def student_alone(module: RecommenderModule) -> Iterator[RecommenderModule]:
    """Within the block ``module`` trains without its teacher (its own counted costs)."""
    teacher, module.teacher = module.teacher, None
    try:
        yield module
    finally:
        module.teacher = teacher


def teacher_costs(module: RecommenderModule, train_batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The counted cost of ``module``'s teacher (``recsys.train.cost``'s counters), for
    results.json's efficiency beside the student's own figures:

    - ``teacher_flops_per_step``: the teacher scoring one training step's candidates on
      ``train_batch`` (forward only; what distillation adds to each step's work);
      ``teacher_flops_per_sequence`` = that / the batch's sequences;
    - ``teacher_params``: its parameters (all frozen); ``teacher_model_state_bytes``: their
      bytes (no gradients, no optimiser state); ``teacher_feature_bytes``: what its item
      tower keeps resident to read items from;
    - ``teacher_run``: its run directory.
    """
    teacher = module.teacher
    device = module.log_pop.device
    batch = {k: v.to(device) for k, v in train_batch.items()}
    _, flops = count_flops(lambda: teacher.logits(batch["items"], **module.loss_options(batch)))
    params = {id(p): p for p in teacher.model.parameters()}.values()
    return {
        "teacher_run": str(teacher.run_dir),
        "teacher_flops_per_step": flops,
        "teacher_flops_per_sequence": flops / batch["items"].shape[0],
        "teacher_params": sum(p.numel() for p in params),
        "teacher_model_state_bytes": model_state_bytes(teacher.model, None),
        "teacher_feature_bytes": feature_bytes(teacher.model),
    }
