"""RecommenderModule: the one LightningModule every method trains and evaluates through.

It receives a ready `SequentialRecommender` (item tower + user encoder) by injection and
adds what Lightning needs: the training loss, Adam with per-module learning-rate groups,
and full-ranking validation/test with metric sums reduced across processes.

Towers with a fusion router (CROSSAN's MoMEF) are also logged: `train/aux_loss` (the weighted
auxiliary loss, part of `train/loss`), `train/gate/<expert>` (mean gate weight over the
step's items; under DDP, rank 0's share of the batch: a rank with no routed item has no gate
values, so a synced log could wait forever) and `val/gate/<expert>`, `test/gate/<expert>` (over
the catalogue pass, which every process runs whole, so they agree across ranks).

Modality dropout (``recsys.adapters.modality_mask``) is drawn before every training batch.

With ``ann`` (an index spec, ``eval.ann``), each evaluation pass also builds that faiss index
on the pass's item embeddings and ranks every user's target within the index's top
``max(ks)`` (``recsys.serving.retrieval.retrieved_ranks``, the history excluded by the same
rule), logged as ``<stage>/ann_hr@k`` etc. beside the exact metrics, which stay as they are.

With a ``teacher`` (``recsys.train.distill``, ``distill=kd``), the training loss is the
distillation loss against the teacher's logits over the same candidates.

Batches (see recsys.data.datamodule):
- train: {"items": LongTensor [B, W+1] left-padded windows, "predict": BoolTensor [B, W] the
  positions trained}.
- val/test: {"inputs": [B, W], "target": [B], "history": [B, H], "user": [B]}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch

from recsys.adapters.modality_mask import resample_dropout
from recsys.eval.metrics import RankingMetrics
from recsys.eval.ranking import full_ranking_ranks
from recsys.models.loss import log_popularity
from recsys.models.recommender import SequentialRecommender
from recsys.serving.ann import build_index
from recsys.serving.retrieval import Retriever, retrieved_ranks

if TYPE_CHECKING:
    from recsys.train.distill import Teacher


class RecommenderModule(pl.LightningModule):
    """Train with the configured loss; evaluate by full ranking over all items.

    Args:
        model: item tower + user encoder.
        train_popularity: float tensor [N+1], training-split item counts (index 0 = pad);
            the in-batch loss subtracts log(popularity) from candidate logits.
        lrs: learning rate per parameter group, e.g. {"adapter": 1e-4,
            "text_head": 5e-5, "other": 2e-4}.
        weight_decay: Adam's L2 penalty on every parameter group (0: none, the reference).
        loss: "in_batch" (reference) or "full" (softmax over the whole catalogue).
        mask_history: full loss only: mask the user's other items of the window.
        cross_rank_negatives: in_batch loss under DDP: candidates from every process's batch.
        ks: cut-offs for HR/NDCG/MRR.
        tie_policy: how items scored equal to the target count ("pessimistic" default).
        chunk_size: items scored per chunk in full ranking.
        mask_target_in_history: a target that repeats a history item is masked too
            (``full_ranking_ranks(mask_target=...)``).
        ann: an ANN index spec ``{"kind": ..., <options>}`` (``recsys.serving.ann``) to also
            rank through at every evaluation pass (metrics ``ann_<name>@k``); None: off.
        config: the run's resolved config (plain containers): saved as the module's
            hyper-parameters, so it travels in every checkpoint and is logged to every
            logger (W&B config, CSV hparams.yaml).
        inputs: what the model is trained on, ``{"data_fingerprint": str,
            "cache_fingerprints": {modality: str}}``: saved in every checkpoint
            (``checkpoint["inputs"]``), so a checkpoint alone tells whether today's data and
            caches are the ones it learnt from (``recsys.train.restore``).
    """

    def __init__(
        self,
        model: SequentialRecommender,
        train_popularity: torch.Tensor,
        lrs: dict[str, float],
        weight_decay: float = 0.0,
        loss: str = "in_batch",
        mask_history: bool = True,
        cross_rank_negatives: bool = False,
        ks: tuple[int, ...] = (5, 10, 20),
        tie_policy: str = "pessimistic",
        chunk_size: int = 65536,
        mask_target_in_history: bool = False,
        ann: dict | None = None,
        config: dict | None = None,
        inputs: dict | None = None,
    ) -> None:
        super().__init__()
        if config is not None:
            self.save_hyperparameters(config)
        if loss not in ("in_batch", "full"):
            raise ValueError(f"loss must be 'in_batch' or 'full', got {loss!r}")
        self.model = model
        self.lrs = dict(lrs)
        self.weight_decay = weight_decay
        self.loss_name = loss
        self.mask_history = mask_history
        self.cross_rank_negatives = cross_rank_negatives
        self.tie_policy = tie_policy
        self.chunk_size = chunk_size
        self.mask_target_in_history = mask_target_in_history
        self.register_buffer("log_pop", log_popularity(train_popularity), persistent=False)
        self.val_metrics = RankingMetrics(ks=tuple(ks))
        self.test_metrics = RankingMetrics(ks=tuple(ks))
        self.ann = dict(ann) if ann else None
        self.val_ann_metrics = RankingMetrics(ks=tuple(ks), prefix="ann_") if ann else None
        self.test_ann_metrics = RankingMetrics(ks=tuple(ks), prefix="ann_") if ann else None
        self._retriever: Retriever | None = None
        self._item_emb: torch.Tensor | None = None
        self._eval_gates: dict[str, float] = {}
        self.inputs = dict(inputs or {})
        # A frozen teacher (recsys.train.distill.Teacher), set by recsys-train with distill=kd:
        # a plain object, so never part of this module's state_dict, parameters or device moves.
        self.teacher: Teacher | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["inputs"] = self.inputs

    # ---- training -------------------------------------------------------------------
    def loss_options(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The configured loss's arguments for a train batch (``training_scores``'s after the
        items): the student's and, scoring the same candidates, its teacher's."""
        return {
            "log_pop": self.log_pop,
            "loss": self.loss_name,
            "mask_history": self.mask_history,
            "cross_rank_negatives": self.cross_rank_negatives,
            "predict": batch.get("predict"),
        }

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured training loss of a train batch (scalar); with a ``teacher``, the
        distillation loss against its logits over the same candidates."""
        options = self.loss_options(batch)
        if self.teacher is None:
            return self.model.training_loss(batch["items"], **options)
        teacher_logits = self.teacher.logits(batch["items"], **options)
        return self.model.training_loss(batch["items"], **options, teacher_logits=teacher_logits,
                                        alpha=self.teacher.alpha, tau=self.teacher.tau)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Each training batch draws its own modality dropout (``adapter.modality_dropout``)."""
        resample_dropout(self.model)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        size = batch["items"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        tower = self.model.item_tower
        aux = tower.aux_loss()
        if aux is not None:
            self.log("train/aux_loss", aux, on_step=True, on_epoch=True, batch_size=size)
        for expert, weight in tower.gate_summary().items():
            self.log(f"train/gate/{expert}", weight, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.param_groups(self.lrs), weight_decay=self.weight_decay)

    # ---- evaluation -----------------------------------------------------------------
    def _begin_eval(self) -> None:
        """Embed the whole catalogue once per evaluation pass: [N+1, d]; keep the tower's
        gate weights over exactly that pass."""
        tower = self.model.item_tower
        tower.gate_summary()  # start a new window
        self._item_emb = self.model.all_item_embeddings(chunk_size=self.chunk_size)
        self._eval_gates = tower.gate_summary()
        if self.ann:
            self._retriever = Retriever(self._item_emb, index=build_index(self._item_emb, **self.ann))

    def _eval_step(self, batch: dict[str, torch.Tensor], metrics: RankingMetrics,
                   ann_metrics: RankingMetrics | None = None) -> None:
        user_emb = self.model.user_embedding(batch["inputs"])
        ranks = full_ranking_ranks(
            user_emb,
            self._item_emb,
            batch["target"],
            batch["history"],
            tie_policy=self.tie_policy,
            chunk_size=self.chunk_size,
            mask_target=self.mask_target_in_history,
        )
        metrics.update(ranks)
        if ann_metrics is not None:
            ann_metrics.update(retrieved_ranks(self._retriever, user_emb, batch["target"], batch["history"],
                                               max(metrics.ks), self.mask_target_in_history))

    def _end_eval(self, stage: str, metrics: RankingMetrics,
                  ann_metrics: RankingMetrics | None = None) -> None:
        # compute() already sums the metric totals over processes.
        for name, value in metrics.compute().items():
            self.log(f"{stage}/{name}", value.float(), prog_bar=name == "hr@10")
        for expert, weight in self._eval_gates.items():
            self.log(f"{stage}/gate/{expert}", weight)
        metrics.reset()
        if ann_metrics is not None:
            for name, value in ann_metrics.compute().items():
                self.log(f"{stage}/{name}", value.float())
            ann_metrics.reset()
        self.model.item_tower.gate_summary()  # drop the eval steps' item lookups
        self._item_emb = None
        self._retriever = None
        self._eval_gates = {}

    def on_validation_epoch_start(self) -> None:
        self._begin_eval()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_ann_metrics)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val", self.val_metrics, self.val_ann_metrics)

    def on_test_epoch_start(self) -> None:
        self._begin_eval()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_ann_metrics)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test", self.test_metrics, self.test_ann_metrics)
