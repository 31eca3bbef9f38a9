"""Late fusion of per-modality stream outputs into one item embedding (CROSSAN's MoMEF).

Inputs per item: the outputs ``z_e`` [d_e] of E streams (experts e = one per modality) and
the validity ``v_e`` (the item has modality e). Every expert is a linear head
``o_e = W_e·z_e + b_e`` (d_e -> d_model). Two ways to combine them:

``momef`` (Mixture of Modality Experts Fusion)::

    x   = concat_e(v_e·o_e)                          [E·d_model]  (missing experts read as 0)
    s   = W_g·x + b_g                                [E]          (W_g ~ N(0, 0.01), b_g = 0)
    p_e = exp(s_e)·v_e / Σ_e' exp(s_e')·v_e'         router probabilities, exactly 0 where v_e = 0
    w   = p                                          dense routing (top_k None), or
    w_e = p_e·1[e ∈ S] / Σ_{e' ∈ S} p_e'             top-k: S = the k largest p_e among valid experts
    y   = Σ_e w_e·o_e

At init the router is nearly uniform (``y`` ≈ the mean of the valid experts), its small
random weights breaking top-k ties differently for each item.

``concat`` (the ablation; IISAN's fusion): ``y = W_f·concat_e(v_e·o_e) + b_f``.

An item with no valid modality (the padding row, or an item lacking every modality) has no
expert to route to: its embedding is the learned vector ``empty`` [d_model] (zero at init),
in both modes.

Load balancing (``momef``, Switch-Transformer form), over the n_R routed items of the call
(those with >= 1 valid expert)::

    P_e = (1/n_R)·Σ_i p_ie                           mean router probability (before top-k)
    f_e = |{i : e ∈ S_i}| / Σ_i |S_i|                share of the selections going to e; S_i =
                                                     the top-k set, or the argmax when dense
    aux = λ·E·Σ_e f_e·P_e                            λ = aux_loss_weight; = λ when balanced

``f`` is a count (no gradient); the gradient flows through ``P``. ``aux_loss()`` is that of
the last forward, None when λ = 0 (and for ``concat``). ``gate_summary()`` is the mean
weight ``w_e`` per expert over the routed items of every forward since the last reset.
"""

from __future__ import annotations

import torch
from torch import nn

FUSIONS = ("momef", "concat")
ROUTER_INIT_STD = 0.01


class ModalityFusion(nn.Module):
    """Expert heads + a combination rule; ``forward(z, valid) -> [n, d_model]``.

    Args:
        widths: expert name (modality) -> stream width d_e, in stream order.
        d_model: item embedding width.
    """

    def __init__(self, widths: dict[str, int], d_model: int) -> None:
        super().__init__()
        self.experts = nn.ModuleDict({e: nn.Linear(d, d_model) for e, d in widths.items()})
        self.empty = nn.Parameter(torch.zeros(d_model))

    def combine(self, o: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Expert outputs ``o`` [n, E, d_model] (missing ones zeroed), ``valid`` [n, E] bool
        -> [n, d_model]."""
        raise NotImplementedError

    def forward(self, z: dict[str, torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        """Stream outputs ``z`` (expert -> [n, d_e]) and ``valid`` [n, E] bool (columns in
        expert order) -> item embeddings [n, d_model]. An expert missing from ``z`` (invalid
        for every item, its column of ``valid`` False) is not computed: its output is 0."""
        outs = {e: head(z[e]) for e, head in self.experts.items() if e in z}
        zeros = torch.zeros_like(next(iter(outs.values())))
        o = torch.stack([outs.get(e, zeros) for e in self.experts], dim=1)
        o = o * valid.unsqueeze(-1).to(o.dtype)
        y = self.combine(o, valid)
        return torch.where(valid.any(-1, keepdim=True), y, self.empty.to(y.dtype))

    def aux_loss(self) -> torch.Tensor | None:
        return None

    def gate_summary(self, reset: bool = True) -> dict[str, float]:
        return {}


class ConcatFusion(ModalityFusion):
    """``y = Linear(E·d_model -> d_model)(concat_e(v_e·o_e))``."""

    def __init__(self, widths: dict[str, int], d_model: int) -> None:
        super().__init__(widths, d_model)
        self.linear = nn.Linear(d_model * len(widths), d_model)

    def combine(self, o: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.linear(o.flatten(1))


class MoMEF(ModalityFusion):
    """Mixture of modality experts with a masked softmax router (see module docstring).

    Args:
        widths: expert name -> stream width.
        d_model: item embedding width.
        top_k: route each item to its k most probable valid experts (1 <= k < E); None =
            dense (every valid expert).
        aux_loss_weight: λ of the load-balancing loss; 0 disables it.
    """

    def __init__(
        self, widths: dict[str, int], d_model: int, top_k: int | None = None, aux_loss_weight: float = 0.0
    ) -> None:
        super().__init__(widths, d_model)
        n = len(widths)
        if top_k is not None and not 1 <= top_k < n:
            raise ValueError(f"top_k must be in 1..{n - 1} for {n} experts (None = dense), got {top_k}")
        if aux_loss_weight < 0:
            raise ValueError(f"aux_loss_weight must be >= 0, got {aux_loss_weight}")
        self.top_k = top_k
        self.aux_loss_weight = float(aux_loss_weight)
        self.router = nn.Linear(d_model * n, n)
        nn.init.normal_(self.router.weight, std=ROUTER_INIT_STD)
        nn.init.zeros_(self.router.bias)
        self._aux: torch.Tensor | None = None
        self._gate_sum: torch.Tensor | None = None  # [E] float32, summed weights since reset
        self._gate_items: torch.Tensor | None = None  # routed items since reset

    def route(self, o: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router of expert outputs ``o`` [n, E, d_model] (missing ones zeroed), ``valid``
        [n, E] bool -> (weights w [n, E], probabilities p [n, E], selections S [n, E] bool).
        Rows without a valid expert are all zero / False."""
        logits = self.router(o.flatten(1)).masked_fill(~valid, float("-inf"))
        logits = logits.masked_fill(~valid.any(-1, keepdim=True), 0.0)  # no valid expert: no -inf row
        probs = torch.softmax(logits, dim=-1) * valid.to(logits.dtype)
        top = probs.topk(self.top_k or 1, dim=-1).indices
        selected = torch.zeros_like(valid).scatter(1, top, True) & valid
        if self.top_k is None:
            return probs, probs, selected
        kept = probs * selected.to(probs.dtype)
        weights = kept / kept.sum(-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)
        return weights, probs, selected

    def balance_loss(self, probs: torch.Tensor, selected: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``E·Σ_e f_e·P_e`` over the routed items (unweighted; 0 when none is routed)."""
        routed = valid.any(-1)
        if not routed.any():
            return probs.sum() * 0
        p_mean = probs[routed].mean(0)
        counts = selected[routed].sum(0).to(probs.dtype)
        return probs.shape[-1] * (counts / counts.sum() * p_mean).sum()

    def combine(self, o: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        weights, probs, selected = self.route(o, valid)
        self._aux = (
            self.aux_loss_weight * self.balance_loss(probs, selected, valid) if self.aux_loss_weight else None
        )
        gate_sum = weights.detach().float().sum(0)
        routed = valid.any(-1).sum()
        if self._gate_sum is None:
            self._gate_sum, self._gate_items = gate_sum, routed
        else:
            self._gate_sum, self._gate_items = self._gate_sum + gate_sum, self._gate_items + routed
        return torch.einsum("ne,ned->nd", weights, o)

    def aux_loss(self) -> torch.Tensor | None:
        return self._aux

    def gate_summary(self, reset: bool = True) -> dict[str, float]:
        summary = {}
        if self._gate_sum is not None and int(self._gate_items) > 0:
            means = (self._gate_sum / self._gate_items).tolist()
            summary = dict(zip(self.experts, means, strict=True))
        if reset:
            self._gate_sum = self._gate_items = None
        return summary


def build_fusion(
    fusion: str, widths: dict[str, int], d_model: int, top_k: int | None, aux_loss_weight: float
) -> ModalityFusion:
    """``momef`` (with ``top_k``, ``aux_loss_weight``) or ``concat`` over experts ``widths``."""
    if fusion == "momef":
        return MoMEF(widths, d_model, top_k, aux_loss_weight)
    if fusion == "concat":
        return ConcatFusion(widths, d_model)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
