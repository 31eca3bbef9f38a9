"""IISAN item tower: decoupled side streams over cached frozen-encoder hidden states.

Streams (each a recurrence over the L cached layers, ``z = 0`` at the start, one side block
and one mixing gate per layer; see ``side_block.py``):

- intra (one per modality):  ``z = block_l(mix_l(H[l], z))``
- inter (text + image):      ``z_m = block_l(z_m + mix_l(H_img[l], H_text[l]))``

``fusion="gated"`` makes ``mix_l(a, b) = g_l·a + (1-g_l)·b`` (IISAN; ``g_l = sigmoid(w_l/0.1)``,
``z_m`` itself is not gated). ``fusion="add"`` is the IISAN "add" ablation read as: no gates,
the backbone hidden states are summed in unweighted, ``z = block_l(H[l] + z)`` and
``z_m = block_l(z_m + H_img[l] + H_text[l])``.

Each stream ends in a head ``Linear(d, d) -> Linear(d, d_model)`` (no activation); the item
embedding is ``Linear(d_model·n_streams -> d_model)`` over the concatenation in the reference
order [image, text, inter] (streams that are absent are skipped).

Widths (IISAN-Versa): a modality's intra stream runs at ``stream_width[m]`` (default: the
width of its LAST selected layer, i.e. the encoder's output width; 768 for BERT/ViT-B);
each layer whose width differs is mapped to it by its own ``Linear`` (so the faithful
symmetric 768-d config has no alignment parameters). The inter stream runs at the narrower
width ``min(d_text, d_image)``: in each inter block a ``Linear`` maps the WIDER modality's
layer to it before the gated sum, while the narrower modality's layers pass unchanged when
their widths already equal it (``LayerAlign``: only layers of another width get a ``Linear``,
e.g. the early stages of an EfficientNet). Intra streams keep their own widths.

Layers: the tower uses all L layers of the store in order; ``layers`` (the schedule of
hidden-state entries, faithful [0, 2, 4, 6, 8, 10, 12]) only documents/validates what the
cache loader selected.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.adapters import ItemTower, check_store_layers, embed_unique, register_adapter, trainable
from recsys.adapters.side_block import LayerAlign, Mix, SideBlock
from recsys.cache.features import FeatureStore

STREAMS = ("intra_inter", "intra", "inter")
FUSIONS = ("gated", "add")
REFERENCE_ORDER = ("image", "text")  # concat order of intra streams; "inter" comes last


class IntraStream(nn.Module):
    """One modality's side stream: features ``[n, L, D_max]`` -> ``[n, d]``."""

    def __init__(self, widths: list[int], d: int, r: int, gated: bool) -> None:
        super().__init__()
        self.d = d
        self.align = LayerAlign(widths, d)
        self.blocks = nn.ModuleList(SideBlock(d, r) for _ in widths)
        self.mixes = nn.ModuleList(Mix(gated) for _ in widths)

    def forward(self, h: torch.Tensor, messages: torch.Tensor | None = None) -> torch.Tensor:
        """``z = block_l(mix_l(H[l], z) + messages[:, l])`` over the layers; ``messages``
        ``[n, L, d]`` are optional per-layer inputs from outside the stream (CROSSAN's
        cross-modal messages), absent in IISAN."""
        z = h.new_zeros(h.shape[0], self.d)
        for layer, (block, mix) in enumerate(zip(self.blocks, self.mixes, strict=True)):
            x = mix(self.align(h, layer), z)
            z = block(x if messages is None else x + messages[:, layer])
        return z


class InterStream(nn.Module):
    """Cross-modal side stream: text ``[n, L, Dt]`` and image ``[n, L, Di]`` -> ``[n, d]``."""

    def __init__(self, text_widths: list[int], image_widths: list[int], d: int, r: int, gated: bool) -> None:
        super().__init__()
        self.d = d
        self.align_text = LayerAlign(text_widths, d)
        self.align_image = LayerAlign(image_widths, d)
        self.blocks = nn.ModuleList(SideBlock(d, r) for _ in text_widths)
        self.mixes = nn.ModuleList(Mix(gated) for _ in text_widths)

    def forward(self, h_text: torch.Tensor, h_image: torch.Tensor) -> torch.Tensor:
        z = h_text.new_zeros(h_text.shape[0], self.d)
        for layer, (block, mix) in enumerate(zip(self.blocks, self.mixes, strict=True)):
            fused = mix(self.align_image(h_image, layer), self.align_text(h_text, layer))
            z = block(z + fused)
        return z


def stream_widths(
    store: FeatureStore, stream_width: int | dict[str, int | None] | None, modalities: list[str]
) -> dict[str, int]:
    """Width of each modality's stream: ``stream_width`` as an int for every modality, a
    dict modality -> int | None, or None; None = the width of the modality's last layer."""
    if not isinstance(stream_width, dict) and not hasattr(stream_width, "keys"):
        stream_width = {m: stream_width for m in modalities}
    return {m: int(stream_width.get(m) or store.widths[m][-1]) for m in modalities}


def _head(d: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Linear(d, d_model))


def _check_config(store: FeatureStore, streams: str, fusion: str, layers: list[int] | dict | None) -> None:
    """Raise a clear ValueError for options the store cannot serve."""
    if streams not in STREAMS:
        raise ValueError(f"streams must be one of {STREAMS}, got {streams!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    check_store_layers(store, layers)
    mods = list(store.modalities)
    depth = {m: len(store.widths[m]) for m in mods}
    if streams != "intra" and not {"text", "image"} <= set(mods):
        raise ValueError(
            f"streams={streams!r} has an inter stream, which needs text and image "
            f"features; the store has {mods}. Use streams='intra' for one modality."
        )
    if streams != "intra" and depth["text"] != depth["image"]:
        raise ValueError(
            f"the inter stream needs as many text as image layers, got text "
            f"{depth['text']} and image {depth['image']}: select equally many layers"
        )


@register_adapter("iisan")
class IISANTower(ItemTower):
    """IISAN side network as an item tower.

    Args:
        store: cached features; every modality in it gets an intra stream (if requested).
        streams: ``intra_inter`` (faithful) | ``intra`` | ``inter``.
        fusion: ``gated`` (faithful) | ``add`` (see module docstring).
        layers: hidden-state entries the store holds (list, or dict per modality); only
            checked against the store's L. None skips the check.
        stream_width: intra width per modality: None (last layer's width), an int for all
            modalities, or a dict modality -> int | None.
        bottleneck: side block bottleneck r (64).
        d_model: item embedding width (64).
        unique_items: embed each distinct id once per call and scatter back.
    """

    def __init__(
        self,
        store: FeatureStore,
        streams: str = "intra_inter",
        fusion: str = "gated",
        layers: list[int] | dict[str, list[int]] | None = None,
        stream_width: int | dict[str, int | None] | None = None,
        bottleneck: int = 64,
        d_model: int = 64,
        unique_items: bool = True,
    ) -> None:
        super().__init__()
        _check_config(store, streams, fusion, layers)
        mods = list(store.modalities)
        width = stream_widths(store, stream_width, mods)

        self.store = store
        self.d_model = d_model
        self.unique_items = unique_items
        gated = fusion == "gated"
        self.intra = nn.ModuleDict()
        if streams != "inter":
            order = [m for m in REFERENCE_ORDER if m in mods] + [m for m in mods if m not in REFERENCE_ORDER]
            for m in order:
                self.intra[m] = IntraStream(store.widths[m], width[m], bottleneck, gated)
        self.inter = None
        if streams != "intra":
            d_inter = min(width["text"], width["image"])
            self.inter = InterStream(store.widths["text"], store.widths["image"], d_inter, bottleneck, gated)
        self.heads = nn.ModuleDict({m: _head(s.d, d_model) for m, s in self.intra.items()})
        if self.inter is not None:
            self.heads["inter"] = _head(self.inter.d, d_model)
        self.fusion = nn.Linear(d_model * len(self.heads), d_model)
        inter_mods = ["text", "image"] if self.inter is not None else []
        self.used = list(dict.fromkeys([*self.intra, *inter_mods]))  # modalities to gather

    @property
    def num_items(self) -> int:
        return self.store.num_items

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of items ``ids`` [n] (long) -> [n, d_model], one row per id."""
        dtype = self.fusion.weight.dtype
        feats = {m: self.store.gather(m, ids).to(dtype) for m in self.used}
        outs = [head(self.intra[m](feats[m])) for m, head in self.heads.items() if m in self.intra]
        if self.inter is not None:
            outs.append(self.heads["inter"](self.inter(feats["text"], feats["image"])))
        return self.fusion(torch.cat(outs, dim=-1))

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Item embeddings: ``item_ids`` [...] long -> [..., d_model]."""
        if self.unique_items:
            return embed_unique(self.embed, item_ids)
        return self.embed(item_ids.reshape(-1)).reshape(*item_ids.shape, self.d_model)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        heads = [h for m, h in self.heads.items() if m != "text"]
        return {
            "adapter": trainable(p for s in (self.intra, self.inter) if s for p in s.parameters()),
            "text_head": trainable(self.heads["text"].parameters()) if "text" in self.heads else [],
            "head": trainable(p for mod in (*heads, self.fusion) for p in mod.parameters()),
        }
