"""Video encoders: frame sampling and decoding (mp4, frame directories, .npy), a tiny random
VideoMAE (hf_video), frame-averaged image encoders (frames), missing / corrupt files,
in-loop inputs, the shipped configs."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from recsys.adapters.item_inputs import build_item_inputs
from recsys.cache.build import build_cache
from recsys.cli import compose
from recsys.encoders import build_encoder
from recsys.encoders.media import load_video_frames, sample_frame_indices

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VIDEOMAE = {
    "kind": "hf_video",
    "name": "tiny_videomae",
    "name_or_path": "MCG-NJU/videomae-base",
    "pretrained": False,
    "arch": "videomae",
    "arch_overrides": {**SMALL, "image_size": 32, "patch_size": 16, "num_frames": 4, "tubelet_size": 2},
}
TINY_VIT = {
    "kind": "hf_image",
    "name_or_path": "google/vit-base-patch16-224",
    "pretrained": False,
    "arch": "vit",
    "arch_overrides": {**SMALL, "image_size": 32, "patch_size": 16},
    "resolution": 32,
}
FRAMES = {"kind": "frames", "name": "tiny_frames", "num_frames": 4, "image_encoder": TINY_VIT}


def clip_frames(count, size=64):
    """[count, size, size, 3] uint8 frames, each a different colour and bar position."""
    frames = np.zeros((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        frames[i, ..., 0] = 16 * i
        frames[i, ..., 1] = 255 - 16 * i
        frames[i, 8 * (i % 8) : 8 * (i % 8) + 8, :, 2] = 200
    return frames


def write_mp4(path, frames):
    """mpeg4 / yuv420p at 8 fps, as the synthetic dataset writes its clips."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The same 16-frame clip as mp4, .npy and a png directory; a 2-frame .npy; a corrupt mp4."""
    root = tmp_path_factory.mktemp("video")
    frames = clip_frames(16)
    write_mp4(root / "clip.mp4", frames)
    np.save(root / "clip.npy", frames)
    (root / "frames").mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(root / "frames" / f"{i:03d}.png")
    np.save(root / "short.npy", clip_frames(2))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    names = {"clip": "clip.mp4", "npy": "clip.npy", "frames": "frames", "short": "short.npy"}
    return {key: str(root / name) for key, name in names.items()} | {"corrupt": str(root / "corrupt.mp4")}


@pytest.fixture(scope="module")
def videomae():
    return build_encoder(VIDEOMAE)


@pytest.fixture(scope="module")
def frames_encoder():
    return build_encoder(FRAMES)


def test_frame_indices_are_uniform_segment_centres():
    assert sample_frame_indices(16, 4) == [2, 6, 10, 14]
    assert sample_frame_indices(16, 16) == list(range(16))
    assert sample_frame_indices(2, 4) == [0, 0, 1, 1]
    steps = set(np.diff(sample_frame_indices(300, 10)).tolist())
    assert steps == {30} and sample_frame_indices(300, 10)[0] == 15
    with pytest.raises(ValueError, match="no frames"):
        sample_frame_indices(0, 4)


def test_every_source_gives_the_same_frames(clips):
    array, indices = load_video_frames(clips["npy"], 4, 32)
    assert array.shape == (4, 3, 32, 32) and array.dtype == torch.uint8 and indices == [2, 6, 10, 14]
    directory, _ = load_video_frames(clips["frames"], 4, 32)
    assert torch.equal(directory, array)  # png is lossless
    decoded, indices = load_video_frames(clips["clip"], 4, 32)
    assert indices == [2, 6, 10, 14]
    assert (decoded.float() - array.float()).abs().mean() < 8  # mpeg4 + yuv420p are lossy
    assert decoded[:, 0].float().mean(dim=(1, 2)).diff().gt(0).all()  # red ramps up: frame order kept


def test_videomae_shapes_missing_and_batch_invariance(videomae, clips):
    records = [{"video_path": clips["clip"]}, {"video_path": None}, {"video_path": clips["frames"]}]
    batch = videomae.preprocess(records)
    assert batch["pixel_values"].shape == (3, 4, 3, 32, 32) and batch["missing"] == 1
    assert batch["valid"].tolist() == [True, False, True] and batch["frame_mask"][1].sum() == 0
    feats = videomae.encode(batch)
    assert feats.shape == (3, 3, 32) and videomae.layer_widths == [32] * 3
    assert (feats[1] == 0).all() and (feats[[0, 2]].abs().sum(-1) > 0).all()
    torch.testing.assert_close(feats[2], videomae.encode(videomae.preprocess(records[2:]))[0])
    ident = videomae.identity()
    assert ident["modality"] == "video" and ident["preprocessing"]["num_frames"] == 4
    assert ident["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    with pytest.raises(ValueError, match="num_frames=16 but the model takes num_frames=4"):
        build_encoder({**VIDEOMAE, "num_frames": 16})


def test_frames_average_the_image_encoder_over_distinct_frames(frames_encoder, clips):
    enc, image = frames_encoder, frames_encoder.image
    assert enc.all_widths == image.all_widths == [32] * 3 and enc.modality == "video"
    records = [{"video_path": clips["npy"]}, {"video_path": clips["short"]}, {"video_path": None}]
    batch = enc.preprocess(records)
    assert batch["frame_mask"].tolist() == [[True] * 4, [True, False, True, False], [False] * 4]
    feats = enc.encode(batch)
    assert feats.shape == (3, 3, 32) and (feats[2] == 0).all()
    for row, frames in ((0, batch["pixel_values"][0]), (1, batch["pixel_values"][1, [0, 2]])):
        with torch.no_grad():
            per_frame = image.hidden_states({"pixel_values": frames})
        torch.testing.assert_close(feats[row], torch.stack([h.mean(dim=0) for h in per_frame]))
    torch.testing.assert_close(feats[1], enc.encode(enc.preprocess(records[1:2]))[0])
    assert enc.identity()["source"]["image_encoder"]["kind"] == "hf_image"
    with pytest.raises(ValueError, match="not on its image_encoder"):
        build_encoder({**FRAMES, "image_encoder": {**TINY_VIT, "layers": [0]}})
    with pytest.raises(ValueError, match="must be an image encoder"):
        build_encoder({**FRAMES, "image_encoder": VIDEOMAE})


def test_corrupt_skipped_and_missing_field(videomae, clips):
    with pytest.raises(OSError, match="corrupt.mp4") as err:
        videomae.preprocess([{"video_path": clips["corrupt"]}])
    assert "on_error=skip" in str(err.value)
    with pytest.raises(KeyError, match="video_path"):
        videomae.preprocess([{"title": "no video field"}])
    skipping = build_encoder({**VIDEOMAE, "on_error": "skip"})
    batch = skipping.preprocess([{"video_path": clips["corrupt"]}, {"video_path": clips["npy"]}])
    assert batch["failed"] == 1 and batch["valid"].tolist() == [False, True]
    assert (skipping.encode(batch)[0] == 0).all()


@pytest.mark.parametrize("fixture", ["videomae", "frames_encoder"])
def test_item_inputs_reproduce_the_preprocessing(clips, fixture, request):
    enc = request.getfixturevalue(fixture)
    records = [{"video_path": clips["short"]}, {"video_path": None}, {"video_path": clips["clip"]}]
    inputs = build_item_inputs(enc, records)
    assert inputs.pixels.shape == (4, 4, 3, 32, 32) and inputs.pixels.dtype == torch.uint8
    ids = torch.tensor([3, 1, 2])
    want = enc.encode(enc.preprocess([records[2], records[0], records[1]]))
    torch.testing.assert_close(enc.encode(inputs.batch(ids)), want, atol=1e-5, rtol=1e-4)


def test_video_configs(clips):
    """frames_efficientnet_lite0: the real EfficientNet-Lite0 weights on 4 frames;
    videomae_base: the real architecture (built with 1 layer to stay fast)."""
    cfg = compose("cache", ["encoder/video=frames_efficientnet_lite0"])
    frames = build_encoder(OmegaConf.to_container(cfg.encoder.video, resolve=True))
    assert frames.layer_widths == [32, 16, 24, 40, 80, 112, 192, 320] and frames.videos.num_frames == 4
    feats = frames.encode(frames.preprocess([{"video_path": clips["clip"]}]))
    assert frames.videos.resolution == 224 and feats.shape == (1, 8, 320)
    videomae = OmegaConf.to_container(OmegaConf.load(CONF / "encoder" / "video" / "videomae_base.yaml"))
    enc = build_encoder({**videomae, "pretrained": False, "arch_overrides": {"num_hidden_layers": 1}})
    assert (enc.videos.num_frames, enc.videos.resolution, enc.layer_widths) == (16, 224, [768, 768])


def test_cache_of_videos_counts_missing_and_failed(frames_encoder, videomae, clips, tmp_path):
    records = [{"video_path": p} for p in (clips["clip"], None, clips["short"])]
    manifest = build_cache(videomae, records, "f" * 64, tmp_path, progress_bar=False)
    assert manifest["shape"] == [4, 3, 32] and manifest["encoder"]["modality"] == "video"
    array = np.load(tmp_path / "tiny_videomae.npy")
    assert [i for i in range(4) if not array[i].any()] == [0, 2]
    skipping = build_encoder({**FRAMES, "on_error": "skip", "layer_groups": 2})
    records[1] = {"video_path": clips["corrupt"]}
    manifest = build_cache(skipping, records, "f" * 64, tmp_path, progress_bar=False)
    assert manifest["build"]["failed"] == 1 and manifest["encoder"]["layers"] == [0, 1, 2]
