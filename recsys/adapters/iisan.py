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

Layers: the tower uses all L layers of its source in order; which hidden-state entries those
are (faithful: [0, 2, 4, 6, 8, 10, 12]) is the adapter config's layer schedule, applied when
the source is built (``layer_schedule.py``).

Learning rates (``lr_groups``; ``SequentialRecommender.param_groups`` maps the groups to
``optimizer.lr``): ``official`` (the default) reproduces the official code's per-parameter
rates, which it assigns by substrings of parameter names: ``adapter`` (1e-4) = the side
blocks of every stream, the image gates and the image head's first layer; ``text_head``
(5e-5) = the text head's first layer; ``head`` (2e-4) = the text and inter gates, the second
layer of the text and image heads, both inter head layers and the fusion. Streams of other
modalities (video, audio) are grouped like the image stream. ``by_module`` puts every
side-stream parameter (blocks, gates, alignment) in ``adapter``, the whole text head in
``text_head``, the other heads and the fusion in ``head`` (on Scientific it trains worse:
``docs/reference-departures.md``).

Init: PyTorch's default everywhere but the side blocks and gates (``side_block.py``);
``image_head_init="xavier_normal"`` gives the image head's second layer (d -> d_model)
Xavier-normal weights and a zero bias, as the official code.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveInt
from torch import nn

from recsys.adapters import ItemTower, embed_unique, register_adapter, trainable
from recsys.adapters.side_block import LayerAlign, Mix, SideBlock
from recsys.cache.features import FeatureStore

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


def _check_depths(source: FeatureStore, streams: str) -> None:
    """The inter stream pairs text and image layers one by one."""
    depth = {m: len(source.widths[m]) for m in source.modalities}
    if streams != "intra" and depth["text"] != depth["image"]:
        raise ValueError(
            f"the inter stream needs as many text as image layers, got text "
            f"{depth['text']} and image {depth['image']}: select equally many layers"
        )


def _ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@register_adapter("iisan")
class IISANTower(ItemTower):
    """IISAN side network as an item tower.

    Args:
        source: per-layer item features (``FeatureStore``, or ``EncoderFeatures`` for
            ``iisan_uncached``); every modality in it gets an intra stream (if requested).
        streams: ``intra_inter`` (faithful) | ``intra`` | ``inter``.
        fusion: ``gated`` (faithful) | ``add`` (see module docstring).
        stream_width: intra width per modality: None (last layer's width), an int for all
            modalities, or a dict modality -> int | None.
        bottleneck: side block bottleneck r (64).
        lr_groups: ``official`` | ``by_module`` (module docstring).
        image_head_init: ``torch_default`` | ``xavier_normal`` (official).
        d_model: item embedding width (64).
        unique_items: embed each distinct id once per call and scatter back.
    """

    def __init__(
        self,
        source: FeatureStore,
        streams: Literal["intra_inter", "intra", "inter"] = "intra_inter",
        fusion: Literal["gated", "add"] = "gated",
        stream_width: PositiveInt | dict[str, PositiveInt | None] | None = None,
        bottleneck: PositiveInt = 64,
        lr_groups: Literal["by_module", "official"] = "official",
        image_head_init: Literal["torch_default", "xavier_normal"] = "torch_default",
        d_model: int = 64,
        unique_items: bool = True,
    ) -> None:
        super().__init__()
        self.check_options(list(source.modalities), {"streams": streams})
        _check_depths(source, streams)
        mods = list(source.modalities)
        width = stream_widths(source, stream_width, mods)

        self.store = source
        self.d_model = d_model
        self.unique_items = unique_items
        self.lr_groups = lr_groups
        gated = fusion == "gated"
        self.intra = nn.ModuleDict()
        if streams != "inter":
            order = [m for m in REFERENCE_ORDER if m in mods] + [m for m in mods if m not in REFERENCE_ORDER]
            for m in order:
                self.intra[m] = IntraStream(source.widths[m], width[m], bottleneck, gated)
        self.inter = None
        if streams != "intra":
            d_inter = min(width["text"], width["image"])
            widths = source.widths["text"], source.widths["image"]
            self.inter = InterStream(*widths, d_inter, bottleneck, gated)
        self.heads = nn.ModuleDict({m: _head(s.d, d_model) for m, s in self.intra.items()})
        if self.inter is not None:
            self.heads["inter"] = _head(self.inter.d, d_model)
        if image_head_init == "xavier_normal" and "image" in self.heads:
            nn.init.xavier_normal_(self.heads["image"][1].weight)
            nn.init.zeros_(self.heads["image"][1].bias)
        self.fusion = nn.Linear(d_model * len(self.heads), d_model)
        inter_mods = ["text", "image"] if self.inter is not None else []
        self.used = list(dict.fromkeys([*self.intra, *inter_mods]))  # modalities to gather

    @classmethod
    def check_options(cls, modalities: list[str], options: dict) -> None:
        streams = options.get("streams", "intra_inter")
        if streams != "intra" and not {"text", "image"} <= set(modalities):
            raise ValueError(
                f"streams={streams!r} has an inter stream, which needs text and image "
                f"features; the adapter has {modalities}. Use streams='intra' (adapter=iisan_intra) "
                "for one modality."
            )

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
        streams = {**self.intra, **({"inter": self.inter} if self.inter is not None else {})}
        if self.lr_groups == "by_module":
            heads = [h for m, h in self.heads.items() if m != "text"]
            return {
                "adapter": trainable(p for s in streams.values() for p in s.parameters()),
                "text_head": trainable(self.heads["text"].parameters()) if "text" in self.heads else [],
                "head": trainable(p for mod in (*heads, self.fusion) for p in mod.parameters()),
            }
        groups: dict[str, list[nn.Parameter]] = {"adapter": [], "text_head": [], "head": []}
        for m, stream in streams.items():  # gates of the text and inter streams: head rate
            gates = _ids(stream.mixes)
            gate_group = "head" if m in ("text", "inter") else "adapter"
            for p in stream.parameters():
                groups[gate_group if id(p) in gates else "adapter"].append(p)
        for m, (first, second) in self.heads.items():
            first_group = {"text": "text_head", "inter": "head"}.get(m, "adapter")
            groups[first_group] += first.parameters()
            groups["head"] += second.parameters()
        groups["head"] += self.fusion.parameters()
        return {name: trainable(params) for name, params in groups.items()}
