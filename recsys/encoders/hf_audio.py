"""``hf_audio``: a frozen Hugging Face audio encoder over item waveforms.

Per item ``audio_path`` (nullable; WAV / FLAC / OGG / ... through soundfile): mono, resampled
to the feature extractor's ``sampling_rate`` (soxr, ``media.load_audio``), cropped to ``max_seconds``
(clips shorter than the model's smallest input are zero-padded to it), then the model's own
feature extractor. Two families:

- AST (``ASTModel``, model_type ``audio-spectrogram-transformer``): log-mel filterbank
  [B, max_length frames, num_mel_bins], padded / cut to the fixed ``max_length`` the model
  was trained with (so batch composition never matters). Tokens = CLS, distillation, then
  the spectrogram patches. Pooling ``cls``: the mean of the CLS and distillation tokens (what
  AST's own classification head reads); ``mean``: the mean over the patch tokens.
- wav2vec2-style (``Wav2Vec2Model``, HuBERT, WavLM: models with
  ``_get_feat_extract_output_lengths``): normalised waveform [B, S] + ``attention_mask``.
  Pooling ``mean`` over the REAL frames: the frame mask comes from the true input lengths
  through the model's conv arithmetic, so padded audio never enters the mean. Models whose
  first conv layer uses GroupNorm (``feat_extract_norm: group``, e.g. wav2vec2-base)
  normalise over time, so zero padding would change every frame: they run clip by clip at
  the true length (as transformers advises: no attention mask, no padding for them).

Hidden-state entries: the embedding / feature-projection output + every layer
(``output_hidden_states=True``), as transformers returns them. Feature extractors: from
``name_or_path`` with ``pretrained=True`` (``feature_extractor`` = overrides), else built
from explicit parameters (``feature_extractor``; AST's mel bins and length default to the
model config's).

Example:
    >>> enc = build_encoder({"kind": "hf_audio", "name": "ast", "pretrained": False,
    ...     "name_or_path": "MIT/ast-finetuned-audioset-10-10-0.4593",
    ...     "arch": "audio-spectrogram-transformer", "pooling": "cls"})
    >>> enc.encode(enc.preprocess([{"audio_path": "/x/1.wav"}, {"audio_path": None}])).shape
    torch.Size([2, 13, 768])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import soxr
import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from transformers import ASTFeatureExtractor, AutoFeatureExtractor, Wav2Vec2FeatureExtractor

from recsys.encoders.base import FrozenEncoder
from recsys.encoders.hf_model import from_pretrained_or_explain, load_hf_backbone, source_info
from recsys.encoders.media import ON_ERROR, RESAMPLER, load_audio, read_records
from recsys.encoders.pooling import pool_tokens
from recsys.encoders.registry import register_encoder

AST_TYPE = "audio-spectrogram-transformer"
AST_WINDOW_SECONDS = 0.025  # one fbank frame (Kaldi frame length)


def _receptive_field(config: Any) -> int:
    """Input samples of one output frame of a wav2vec2-style conv feature encoder."""
    size = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride, strict=True))):
        size = (size - 1) * stride + kernel
    return size


@register_encoder("hf_audio")
class HFAudioEncoder(FrozenEncoder):
    """Frozen transformers audio model; features [B, num_layers + 1 (or kept), hidden].

    Args:
        name, name_or_path, pretrained, arch, arch_overrides, layers, layer_groups, seed: as
            ``hf_text`` (``arch``: ``audio-spectrogram-transformer`` or ``wav2vec2``, whose
            transformers defaults are the AudioSet AST and wav2vec2-base).
        feature_extractor: feature extractor parameters (random weights) or overrides.
        pooling: AST ``cls`` | ``mean``; wav2vec2-style ``mean`` (see the module docstring).
        max_seconds: audio kept from the start of each clip (None = all).
        on_error: ``raise`` | ``skip`` for unreadable audio files.
    """

    modality = "audio"

    def __init__(
        self,
        name: str,
        name_or_path: str,
        pretrained: bool = True,
        arch: str | None = None,
        arch_overrides: dict[str, Any] | None = None,
        feature_extractor: dict[str, Any] | None = None,
        layers: list[NonNegativeInt] | None = None,
        layer_groups: PositiveInt | None = None,
        pooling: Literal["cls", "mean"] = "mean",
        max_seconds: PositiveFloat | None = 10.0,
        on_error: Literal["raise", "skip"] = "raise",
        batch_size: PositiveInt = 16,
        seed: int = 0,
    ) -> None:
        super().__init__(name, layers, pooling, batch_size, layer_groups)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error {on_error!r} not in {ON_ERROR}")
        key = "encoder.audio"
        self.model = load_hf_backbone(name_or_path, pretrained, arch, arch_overrides, seed, key)
        config = self.model.config
        self.is_ast = config.model_type == AST_TYPE
        if not self.is_ast and not hasattr(self.model, "_get_feat_extract_output_lengths"):
            raise ValueError(
                f"{name}: hf_audio supports AST and wav2vec2-style models, not {config.model_type!r}"
            )
        poolings = ("cls", "mean") if self.is_ast else ("mean",)
        if pooling not in poolings:
            raise ValueError(f"{name}: pooling {pooling!r} not in {poolings} for {config.model_type!r}")
        options = dict(feature_extractor or {})
        if pretrained:
            self.extractor = from_pretrained_or_explain(
                lambda path: AutoFeatureExtractor.from_pretrained(path, **options),
                name_or_path,
                "feature extractor",
                key,
            )
        elif self.is_ast:
            sizes = {"num_mel_bins": config.num_mel_bins, "max_length": config.max_length}
            self.extractor = ASTFeatureExtractor(**(sizes | options))
        else:
            self.extractor = Wav2Vec2FeatureExtractor(**options)
        self.sampling_rate = int(self.extractor.sampling_rate)
        if self.is_ast:
            self._check_ast_sizes(config)
            self.min_samples = round(AST_WINDOW_SECONDS * self.sampling_rate)
        else:
            self.min_samples = _receptive_field(config)
        self.per_clip = not self.is_ast and getattr(config, "feat_extract_norm", "layer") == "group"
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.on_error = on_error
        self.source = source_info(name_or_path, pretrained, arch, arch_overrides)
        self.all_widths = [config.hidden_size] * (config.num_hidden_layers + 1)
        self._freeze()

    def _check_ast_sizes(self, config: Any) -> None:
        for option in ("num_mel_bins", "max_length"):
            have, want = getattr(self.extractor, option), getattr(config, option)
            if have != want:
                raise ValueError(
                    f"{self.name}: feature extractor {option}={have} but the AST model takes {want}; "
                    f"set encoder.audio.feature_extractor.{option}={want}"
                )

    def preprocessing(self) -> dict[str, Any]:
        return {
            "field": "audio_path",
            "mono": True,
            "sampling_rate": self.sampling_rate,
            "resampler": f"soxr {soxr.__version__} {RESAMPLER}",
            "max_seconds": self.max_seconds,
            "min_samples": self.min_samples,
            "feature_extractor": self.extractor.to_dict(),
        }

    def _load(self, path: str) -> np.ndarray:
        """Mono float32 [S] at the extractor's rate, S >= min_samples (zero-padded)."""
        wave = load_audio(path, self.sampling_rate, self.max_seconds).numpy()
        return np.pad(wave, (0, max(0, self.min_samples - wave.shape[0])))

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Records with ``audio_path`` -> AST ``input_values`` [B, frames, mel bins], or
        wav2vec2-style ``input_values`` [B, S] + ``attention_mask`` [B, S] (S = the longest
        clip); + ``valid`` [B], ``missing``, ``failed``. Missing clips are silent
        ``min_samples``-long inputs (their features are zeroed)."""
        media = read_records(records, "audio_path", self._load, self.on_error, "audio")
        silent = np.zeros(self.min_samples, dtype=np.float32)
        waves = [silent if w is None else w for w in media.items]
        if self.is_ast:
            features = self.extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt")
        else:
            features = self.extractor(
                waves,
                sampling_rate=self.sampling_rate,
                padding="longest",
                return_attention_mask=True,
                return_tensors="pt",
            )
        batch = {"input_values": features["input_values"].float()}
        if not self.is_ast:
            batch["attention_mask"] = features["attention_mask"].long()
        return batch | {"valid": media.valid, "missing": media.missing, "failed": media.failed}

    def _ast_pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, 2 + patches, D] -> [B, D]: CLS+distillation mean (``cls``) or patch mean."""
        if self.pooling == "cls":
            return hidden[:, :2].mean(dim=1)
        return hidden[:, 2:].mean(dim=1)

    def _run(self, values: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Waveforms [b, S] (+ sample mask [b, S]) -> every entry mean-pooled over real frames."""
        out = self.model(
            input_values=values, attention_mask=mask, output_hidden_states=True, return_dict=True
        )
        if mask is None:
            return [h.mean(dim=1) for h in out.hidden_states]
        frames = self.model._get_feat_extract_output_lengths(mask.sum(dim=1), add_adapter=False)
        positions = torch.arange(out.hidden_states[0].shape[1], device=mask.device)
        frame_mask = positions[None, :] < frames[:, None]  # [b, frames]
        return [pool_tokens(h, frame_mask, "mean") for h in out.hidden_states]

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Extractor outputs -> num_layers + 1 tensors [B, hidden] (pooled per entry)."""
        values = batch["input_values"]
        if self.is_ast:
            out = self.model(input_values=values, output_hidden_states=True, return_dict=True)
            return [self._ast_pool(h) for h in out.hidden_states]
        mask = batch["attention_mask"]
        if not self.per_clip:
            return self._run(values, mask)
        lengths = mask.sum(dim=1).tolist()
        clips = [self._run(values[i : i + 1, :n], None) for i, n in enumerate(lengths)]
        return [torch.cat(entry) for entry in zip(*clips, strict=True)]
