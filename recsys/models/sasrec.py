"""SASRec user encoder, variant ``sasrec_iisan`` (the user encoder of IISAN).

    x = Dropout(LayerNorm(item_emb + pos_emb))          # input LN, eps 1e-6, no scaling
    per block (post-LN):
        x = LN(x + Dropout(W_o · MHA(W_q x, W_k x, W_v x)))   # bias-free Q/K/V/O,
        x = LN(x + Dropout(W_2 · ReLU(W_1 x)))                # attention-prob dropout

Defaults: d=64, 2 blocks, 2 heads, FFN 256, dropout 0.1, max_len 10. Xavier-normal weights
and zero biases (as the reference). ``init="normal"`` draws every Linear and Embedding weight
from N(0, ``init_std``) instead (RecBole's and BERT's 0.02): with Xavier the position table
(fan 10 + 64) starts far larger than an item table (fan N + 64). ``activation`` is the FFN's
(``relu``, the reference; ``gelu`` as RecBole's SASRec).

Positions are right-aligned: the last slot of a length-T input gets position
``max_len - 1`` (sequences are left-padded). For T = max_len (the reference) this is the
reference's ``arange(T)``; for shorter inputs, extra left padding does not shift the
positions of real items, so outputs at real positions do not depend on the padding.

Masking: query t attends to keys s <= t that are real items, and always to itself, so rows
with no real key (padding positions, all-padding users) stay finite. Outputs at padding
positions are set to zero.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn
from torch.nn import functional as F

from recsys.models import register_user_encoder
from recsys.models.init import init_weight

VARIANT = "sasrec_iisan"
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class SelfAttention(nn.Module):
    """Multi-head self-attention, bias-free projections: ``[B,T,d] -> [B,T,d]``."""

    def __init__(self, d: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x`` [B,T,d]; ``allowed`` [B,1,T,T] bool (True = query may attend key)."""
        b, t, d = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:  # [B,T,d] -> [B,h,T,d/h]
            return proj(x).view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(
            heads(self.q),
            heads(self.k),
            heads(self.v),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Post-LN transformer block: attention then ReLU FFN, each ``LN(x + Dropout(f(x)))``."""

    def __init__(self, d: int, num_heads: int, ffn_dim: int, dropout: float, eps: float,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.attn = SelfAttention(d, num_heads, dropout)
        self.ln_attn = nn.LayerNorm(d, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_dim), activation(), nn.Linear(ffn_dim, d))
        self.ln_ffn = nn.LayerNorm(d, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = self.ln_attn(x + self.drop(self.attn(x, allowed)))
        return self.ln_ffn(x + self.drop(self.ffn(x)))


@register_user_encoder("sasrec")
class SASRec(nn.Module):
    """Causal transformer over a user's item embeddings (variant ``sasrec_iisan``).

    Args:
        d_model: width (64). num_blocks: 2. num_heads: 2. ffn_dim: 256. dropout: 0.1.
        max_len: number of learned positions (= input window, 10). ln_eps: 1e-6.
        init: ``xavier_normal`` (the reference) | ``normal`` (N(0, init_std)).
        init_std: the standard deviation of ``init="normal"``.
        activation: the FFN's, ``relu`` (the reference) | ``gelu``.
    """

    def __init__(
        self,
        d_model: PositiveInt = 64,
        num_blocks: NonNegativeInt = 2,
        num_heads: PositiveInt = 2,
        ffn_dim: PositiveInt = 256,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
        max_len: PositiveInt = 10,
        ln_eps: PositiveFloat = 1e-6,
        init: Literal["xavier_normal", "normal"] = "xavier_normal",
        init_std: PositiveFloat = 0.02,
        activation: Literal["relu", "gelu"] = "relu",
    ) -> None:
        super().__init__()
        self.check_options({"d_model": d_model, "num_heads": num_heads})
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, d_model)
        self.ln_in = nn.LayerNorm(d_model, eps=ln_eps)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, ffn_dim, dropout, ln_eps, ACTIVATIONS[activation])
            for _ in range(num_blocks)
        )
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                init_weight(m.weight, init, init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    @staticmethod
    def check_options(options: dict) -> None:
        """Heads split the width evenly: ``d_model`` must be a multiple of ``num_heads``."""
        d, heads = options.get("d_model", 64), options.get("num_heads", 2)
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by num_heads {heads}")

    def forward(self, item_emb: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """User states: ``item_emb`` [B,T,d], ``pad_mask`` [B,T] bool (True = real item,
        left-padded) -> [B,T,d]; position t has seen items 0..t; zeros at padding."""
        t = item_emb.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.max_len}")
        pos = torch.arange(self.max_len - t, self.max_len, device=item_emb.device)
        x = self.drop(self.ln_in(item_emb + self.positions(pos)))
        eye = torch.eye(t, dtype=torch.bool, device=item_emb.device)
        causal = torch.ones_like(eye).tril()
        allowed = (causal & pad_mask[:, None, None, :]) | eye  # [B,1,T,T]
        for block in self.blocks:
            x = block(x, allowed)
        return x * pad_mask.unsqueeze(-1).to(x.dtype)
