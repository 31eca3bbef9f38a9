"""Loading a frozen Hugging Face backbone: pretrained weights or the real architecture with
random weights, one code path for text, image, audio and video encoders.

- ``pretrained=True``: ``from_pretrained(resolve_weights(name_or_path))`` (hub name, local
  directory, or ``pkg:<module>``); offline without the files -> a clear error saying how to
  pass a local directory or switch to random weights.
- ``pretrained=False``: ``AutoConfig.for_model(arch, **arch_config, **arch_overrides)`` and
  random weights drawn under ``seed`` (same shapes and cost, reproducible weight hash).
  transformers' defaults are the reference architectures for ``bert`` / ``vit`` / ``llama``
  / ``audio-spectrogram-transformer`` / ``wav2vec2`` / ``videomae`` (bert-base-uncased,
  ViT-B/16-224, Llama-2-7B, the AudioSet AST, wav2vec2-base, VideoMAE-base); ``arch_config``
  describes a real model whose config differs from them (e.g. Qwen2-0.5B), ``arch_overrides``
  shrinks or varies it (e.g. ``{num_hidden_layers: 2}``, random weights only).
- ``torch_dtype``: ``float32`` | ``bfloat16`` | ``float16`` weights; ``quantization``:
  ``8bit`` | ``4bit`` through bitsandbytes (pretrained weights, CUDA only; a clear error
  says what is missing). Both change the weights and therefore ``weights_sha256``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from recsys.encoders.weights import resolve_weights, seeded

T = TypeVar("T")

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("8bit", "4bit")


def from_pretrained_or_explain(load: Callable[[str], T], spec: str, what: str, key: str) -> T:
    """``load(resolve_weights(spec))``; a missing/offline source raises OSError naming the
    model and the config keys to change (``key`` is e.g. ``encoder.text``)."""
    try:
        return load(resolve_weights(spec))
    except OSError as err:
        raise OSError(
            f"cannot load the {what} of {spec!r} (offline, or not a local directory): {err}\n"
            f"Pass a local copy with `{key}.name_or_path=/path/to/dir`, or set "
            f"`{key}.pretrained=false` to build the architecture with random weights."
        ) from err


def quantization_config(mode: str | None, dtype: torch.dtype, key: str) -> Any:
    """transformers ``BitsAndBytesConfig`` for ``mode`` (None -> None). Raises RuntimeError
    naming what is missing when bitsandbytes or a CUDA device is not there."""
    if mode is None:
        return None
    if mode not in QUANTIZATIONS:
        raise ValueError(f"{key}.quantization {mode!r} not in {QUANTIZATIONS} (or null)")
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (`pip install bitsandbytes`)")
    if not torch.cuda.is_available():
        missing.append("a CUDA device")
    if missing:
        raise RuntimeError(
            f"{key}.quantization={mode!r} needs {' and '.join(missing)}; "
            f"set `{key}.quantization=null` to load unquantized weights"
        )
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def load_hf_backbone(
    name_or_path: str,
    pretrained: bool,
    arch: str | None,
    arch_overrides: dict[str, Any] | None,
    seed: int,
    key: str,
    arch_config: dict[str, Any] | None = None,
    torch_dtype: str = "float32",
    quantization: str | None = None,
) -> nn.Module:
    """The frozen transformers ``AutoModel`` (eval mode) for an encoder config."""
    if torch_dtype not in TORCH_DTYPES:
        raise ValueError(f"{key}.torch_dtype {torch_dtype!r} not in {sorted(TORCH_DTYPES)}")
    dtype = TORCH_DTYPES[torch_dtype]
    quantized = quantization_config(quantization, dtype, key)
    if pretrained:
        if arch_overrides:
            raise ValueError(f"{key}.arch_overrides only applies with pretrained=false")
        options: dict[str, Any] = {"dtype": dtype}
        if quantized is not None:
            options |= {"quantization_config": quantized, "device_map": {"": torch.cuda.current_device()}}
        model = from_pretrained_or_explain(
            lambda path: AutoModel.from_pretrained(path, **options), name_or_path, "weights", key
        )
    else:
        if quantized is not None:
            raise ValueError(f"{key}.quantization needs pretrained weights (pretrained=true)")
        if arch is None:
            raise ValueError(
                f"{key}.pretrained=false needs {key}.arch (a transformers model_type such as "
                f"'bert' or 'vit') to build {name_or_path!r} with random weights"
            )
        config = AutoConfig.for_model(arch, **{**(arch_config or {}), **(arch_overrides or {})})
        with seeded(seed):
            model = AutoModel.from_config(config, dtype=dtype)
    return model.eval()


def source_info(
    name_or_path: str,
    pretrained: bool,
    arch: str | None,
    overrides: dict[str, Any] | None,
    arch_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Manifest ``source`` entry of a Hugging Face backbone (``arch_config`` only when given)."""
    info = {
        "name_or_path": name_or_path,
        "pretrained": pretrained,
        "arch": arch,
        "arch_overrides": dict(overrides or {}),
    }
    return info | ({"arch_config": dict(arch_config)} if arch_config is not None else {})
