"""``timm_image``: a frozen timm CNN over item images; one feature per stage.

Hidden-state entries are taken with timm's own ``forward_intermediates`` (no forked model
source): the stem output and the output of every stage (``extra_blocks=True`` where the
model supports it, e.g. EfficientNet: stem + 7 stages, widths 32,16,24,40,80,112,192,320
for EfficientNet-Lite0), each global-average-pooled to [B, C_stage].

Weights: ``pretrained=True`` with ``weights`` (a file or ``pkg:module:attr``) loads that
state dict, by name or by position (``weights_mapping: position``, for ports of the same
network with other tensor names, shape-checked one by one); without ``weights`` timm's own
pretrained download (offline: a clear error). ``pretrained=False``: random weights (seed).

Example:
    >>> enc = build_encoder({"kind": "timm_image", "name": "effnet",
    ...                      "name_or_path": "tf_efficientnet_lite0", "pretrained": False})
    >>> enc.layer_widths
    [32, 16, 24, 40, 80, 112, 192, 320]
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import timm
import torch
from pydantic import NonNegativeInt, PositiveInt

from recsys.encoders.images import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, ImagePreprocessor
from recsys.encoders.registry import register_encoder
from recsys.encoders.weights import load_state_dict_by_position, resolve_weights, seeded

WEIGHTS_MAPPINGS = ("name", "position")


def create_timm_backbone(
    arch: str, pretrained: bool, weights: str | None, mapping: str, seed: int
) -> torch.nn.Module:
    """The timm model ``arch`` in eval mode with the requested weights."""
    if mapping not in WEIGHTS_MAPPINGS:
        raise ValueError(f"weights_mapping {mapping!r} not in {WEIGHTS_MAPPINGS}")
    if pretrained and weights is None:
        try:
            return timm.create_model(arch, pretrained=True).eval()
        except Exception as err:  # hub/network errors come in many types
            raise OSError(
                f"cannot load pretrained timm weights for {arch!r} (offline?): {err}\n"
                "Pass a local state dict with `encoder.image.weights=/path/to/file.pth`, or "
                "set `encoder.image.pretrained=false` to use random weights."
            ) from err
    with seeded(seed):
        model = timm.create_model(arch, pretrained=False)
    if pretrained:
        state = torch.load(resolve_weights(weights), map_location="cpu", weights_only=True)
        if mapping == "position":
            load_state_dict_by_position(model, state)
        else:
            model.load_state_dict(state, strict=True)
    return model.eval()


@register_encoder("timm_image")
class TimmImageEncoder(ImageEncoder):
    """Frozen timm model; features [B, stages + 1 (or len(layers)), max stage width].

    Args:
        name: unique encoder name.  name_or_path: timm architecture name.
        pretrained / weights / weights_mapping / seed: see module docstring.
        layers: entries to keep (0 = stem, s = stage s); None = all.  layer_groups: or the
            group layer-dropping schedule (see FrozenEncoder).
        pooling: ``gap`` (global average over H, W).
        resolution / on_error: square resize (no crop) / unreadable files (raise | skip).
        mean / std: normalisation; None = the architecture's timm ``pretrained_cfg`` (for
            tf_efficientnet_lite0 0.5 / 0.5, TF-Lite's (x - 127) / 128), else ImageNet's.
    """

    def __init__(
        self,
        name: str,
        name_or_path: str,
        pretrained: bool = True,
        weights: str | None = None,
        weights_mapping: Literal["name", "position"] = "name",
        layers: list[NonNegativeInt] | None = None,
        layer_groups: PositiveInt | None = None,
        pooling: Literal["gap"] = "gap",
        resolution: PositiveInt = 224,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        batch_size: PositiveInt = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(name, layers, pooling, batch_size, layer_groups)
        if pooling != "gap":
            raise ValueError(f"{name}: timm_image supports pooling 'gap', got {pooling!r}")
        self.model = create_timm_backbone(name_or_path, pretrained, weights, weights_mapping, seed)
        params = inspect.signature(self.model.forward_intermediates).parameters
        self._extra = {"extra_blocks": True} if "extra_blocks" in params else {}
        data_cfg = getattr(self.model, "pretrained_cfg", {})
        self.images = ImagePreprocessor(
            resolution,
            mean if mean is not None else data_cfg.get("mean", IMAGENET_MEAN),
            std if std is not None else data_cfg.get("std", IMAGENET_STD),
            on_error,
        )
        self.source = {
            "name_or_path": name_or_path,
            "pretrained": pretrained,
            "weights": weights,
            "weights_mapping": weights_mapping,
        }
        with torch.no_grad():
            probe = self._stages(torch.zeros(1, 3, 64, 64))
        self.all_widths = [int(h.shape[1]) for h in probe]
        self._freeze()

    def _stages(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> per entry [B, C, H', W'] (stem, then every stage)."""
        return self.model.forward_intermediates(pixels, intermediates_only=True, **self._extra)

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Pixels -> stages + 1 tensors [B, C_stage] (global average pooled)."""
        return [h.mean(dim=(2, 3)) for h in self._stages(batch["pixel_values"])]
