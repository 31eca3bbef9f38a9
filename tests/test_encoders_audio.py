"""Audio encoders (hf_audio): loading and resampling, tiny random AST and wav2vec2 built from
their real config classes, padding invariance, missing / corrupt files, in-loop inputs."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig

from recsys.adapters.item_inputs import build_item_inputs
from recsys.cache.build import build_cache
from recsys.encoders import build_encoder
from recsys.encoders.media import load_audio

CONF = Path(__file__).resolve().parents[1] / "conf" / "encoder" / "audio"
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
AST = {
    "kind": "hf_audio",
    "name": "tiny_ast",
    "name_or_path": "MIT/ast-finetuned-audioset-10-10-0.4593",
    "pretrained": False,
    "arch": "audio-spectrogram-transformer",
    "arch_overrides": {**SMALL, "max_length": 200, "num_mel_bins": 64},
    "pooling": "cls",
}
WAV2VEC2_CONV = {
    "conv_dim": [16, 16, 16],
    "conv_stride": [5, 2, 2],
    "conv_kernel": [10, 3, 3],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def wav2vec2(norm):
    """Tiny wav2vec2: GroupNorm feature encoder (as wav2vec2-base) or LayerNorm (as -large-lv60)."""
    overrides = {**SMALL, **WAV2VEC2_CONV, "feat_extract_norm": norm, "do_stable_layer_norm": norm == "layer"}
    return {
        "kind": "hf_audio",
        "name": f"tiny_w2v_{norm}",
        "name_or_path": "facebook/wav2vec2-base",
        "pretrained": False,
        "arch": "wav2vec2",
        "arch_overrides": overrides,
    }


def tone(freq, seconds, rate, channels=1):
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """short: 1 s 16 kHz PCM16 WAV; long: 2.5 s stereo 44.1 kHz FLAC; corrupt WAV."""
    root = tmp_path_factory.mktemp("audio")
    sf.write(root / "short.wav", tone(440, 1.0, 16_000), 16_000, subtype="PCM_16")
    sf.write(root / "long.flac", tone(1000, 2.5, 44_100, channels=2), 44_100)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    return {
        "short": str(root / "short.wav"),
        "long": str(root / "long.flac"),
        "corrupt": str(root / "corrupt.wav"),
    }


@pytest.fixture(scope="module")
def encoders():
    return {
        "ast": build_encoder(AST),
        "group": build_encoder(wav2vec2("group")),
        "layer": build_encoder(wav2vec2("layer")),
    }


def peak_hz(wave, rate):
    spectrum = torch.fft.rfft(wave * torch.hann_window(wave.shape[-1], dtype=wave.dtype)).abs()
    return float(spectrum.argmax()) * rate / wave.shape[-1]


@pytest.mark.parametrize(
    ("orig", "new", "freq"), [(44_100, 16_000, 1000.0), (8_000, 16_000, 1234.0), (48_000, 16_000, 440.0)]
)
def test_audio_is_resampled_keeping_frequency_and_amplitude(orig, new, freq, tmp_path):
    """load_audio resamples with soxr: a tone keeps its pitch and level at the new rate."""
    path = tmp_path / f"{orig}.wav"
    sf.write(path, tone(freq, 2.0, orig), orig)
    out = load_audio(str(path), new, max_seconds=None)
    assert out.shape == (round(2.0 * new),) and out.dtype == torch.float32
    assert abs(peak_hz(out, new) - freq) <= new / out.shape[0]  # within one FFT bin
    expected = 0.5 * torch.sin(2 * math.pi * freq * torch.arange(out.shape[0]) / new)
    torch.testing.assert_close(out[400:-400], expected[400:-400], atol=5e-3, rtol=0)  # away from the ends


def test_resampling_rejects_aliases(tmp_path):
    path = tmp_path / "high.wav"
    sf.write(path, tone(12_000, 1.0, 44_100), 44_100)  # above 16 kHz's Nyquist: would alias to 4 kHz
    assert load_audio(str(path), 16_000, max_seconds=None)[400:-400].abs().max() < 5e-3


def test_load_audio_mono_resampled_cropped(clips):
    wave = load_audio(clips["long"], 16_000, max_seconds=2.0)  # stereo 44.1 kHz FLAC
    assert wave.shape == (32_000,) and wave.dtype == torch.float32
    assert abs(peak_hz(wave, 16_000) - 1000) <= 1 and 0.45 < wave.abs().max() < 0.55
    assert load_audio(clips["short"], 16_000, None).shape == (16_000,)


def test_ast_shapes_poolings_and_batch_invariance(encoders, clips):
    ast = encoders["ast"]
    records = [{"audio_path": clips["short"]}, {"audio_path": clips["long"]}, {"audio_path": None}]
    batch = ast.preprocess(records)
    assert batch["input_values"].shape == (3, 200, 64) and batch["valid"].tolist() == [True, True, False]
    assert batch["missing"] == 1 and batch["failed"] == 0
    feats = ast.encode(batch)
    assert feats.shape == (3, 3, 32) and ast.layer_widths == [32] * 3
    assert (feats[2] == 0).all() and (feats[:2, 1:].abs().sum(-1) > 0).all()
    torch.testing.assert_close(feats[0, 0], feats[1, 0])  # entry 0's CLS / distillation: constants
    torch.testing.assert_close(feats[0], ast.encode(ast.preprocess(records[:1]))[0])
    mean = build_encoder({**AST, "pooling": "mean"})
    assert not torch.allclose(mean.encode(batch)[:2, 1:], feats[:2, 1:], atol=1e-4)
    ident = ast.identity()
    assert ident["modality"] == "audio" and ident["preprocessing"]["sampling_rate"] == 16_000
    assert ident["preprocessing"]["feature_extractor"]["num_mel_bins"] == 64


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_wav2vec2_padding_never_enters_the_mean(encoders, clips, norm):
    """The short clip alone == in a batch padded to the long clip == brute force over its
    own frames (GroupNorm models run clip by clip, LayerNorm ones batched with a mask)."""
    enc = encoders[norm]
    assert enc.per_clip == (norm == "group") and enc.min_samples == 40
    batch = enc.preprocess(
        [{"audio_path": clips["short"]}, {"audio_path": clips["long"]}, {"audio_path": None}]
    )
    assert batch["attention_mask"][0].sum() == 16_000 and batch["input_values"].shape == (3, 40_000)
    feats = enc.encode(batch)
    assert feats.shape == (3, 3, 32) and (feats[2] == 0).all() and not feats.isnan().any()
    alone = enc.preprocess([{"audio_path": clips["short"]}])
    with torch.no_grad():
        states = enc.model(alone["input_values"], output_hidden_states=True).hidden_states
    brute = torch.stack([h[0].mean(dim=0) for h in states])
    torch.testing.assert_close(feats[0], brute, atol=1e-5, rtol=1e-4)


def test_missing_field_corrupt_and_skipped_files(encoders, clips):
    enc = encoders["layer"]
    with pytest.raises(OSError, match="corrupt.wav") as err:
        enc.preprocess([{"audio_path": clips["corrupt"]}])
    assert "on_error=skip" in str(err.value)
    with pytest.raises(KeyError, match="audio_path"):
        enc.preprocess([{"title": "no audio field"}])
    skipping = build_encoder({**wav2vec2("layer"), "on_error": "skip"})
    batch = skipping.preprocess([{"audio_path": clips["corrupt"]}, {"audio_path": clips["short"]}])
    assert batch["failed"] == 1 and batch["valid"].tolist() == [False, True]
    assert (skipping.encode(batch)[0] == 0).all()


@pytest.mark.parametrize("kind", ["ast", "group"])
def test_item_inputs_reproduce_the_preprocessing(encoders, clips, kind):
    enc = encoders[kind]
    records = [{"audio_path": clips["long"]}, {"audio_path": None}, {"audio_path": clips["short"]}]
    inputs = build_item_inputs(enc, records)
    assert inputs.num_items == 3 and inputs.valid.tolist() == [False, True, False, True]
    ids = torch.tensor([3, 1, 0])
    want = enc.encode(enc.preprocess([records[2], records[0], {"audio_path": None}]))
    torch.testing.assert_close(enc.encode(inputs.batch(ids)), want, atol=1e-5, rtol=1e-4)


def test_audio_configs_build_the_real_architectures():
    """The configs' random-weight architectures are the real ones: 13 entries x 768 (built
    here with 1 layer to stay fast)."""
    for name in ("ast", "wav2vec2_base"):
        cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
        assert cfg["kind"] == "hf_audio" and cfg["pretrained"] and cfg["layer_groups"] is None
        assert AutoConfig.for_model(cfg["arch"]).num_hidden_layers + 1 == 13
        with warnings.catch_warnings():  # transformers: AST's 128 mel bins leave one filter empty
            warnings.simplefilter("ignore", UserWarning)
            enc = build_encoder({**cfg, "pretrained": False, "arch_overrides": {"num_hidden_layers": 1}})
        assert enc.layer_widths == [768, 768] and enc.sampling_rate == 16_000
    assert enc.per_clip and enc.min_samples == 400  # wav2vec2-base: GroupNorm, 25 ms receptive field
    with pytest.raises(ValueError, match="not in"):
        build_encoder({**AST, "pooling": "last"})


def test_cache_of_audio_counts_missing(encoders, clips, tmp_path):
    records = [{"audio_path": p} for p in (clips["long"], None, clips["short"])]
    manifest = build_cache(encoders["ast"], records, "f" * 64, tmp_path, progress_bar=False)
    assert manifest["shape"] == [4, 3, 32] and manifest["build"]["missing"] == 1
    assert manifest["encoder"]["preprocessing"]["field"] == "audio_path"
    array = np.load(tmp_path / "tiny_ast.npy")
    assert [i for i in range(4) if not array[i, 1:].any()] == [0, 2]
