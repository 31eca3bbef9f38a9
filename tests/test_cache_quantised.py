"""Quantised caches (recsys/cache/codecs.py, convert.py): every cache.dtype round-trips within
its error bound, bfloat16 / float8 bit patterns load back exactly, recsys-cache converts the
float16 cache (equal to convert_cache, without running the encoder again), the manifest
records the scheme and its checksum covers the scales, a cache of another dtype is never
reused or read as float16, FeatureStore.gather dequantises, recsys-train trains from an
int8 cache, and recsys-eval tests a run on another dtype of the same features (cache_dtype)
and refuses one converted from another float16 cache."""

import json
import typing

import numpy as np
import polars as pl
import pytest
import torch
from conftest import job_config, one_user_dataset

import recsys.cli.cache as cache_cli
from recsys.atomic_io import write_json_atomic
from recsys.cache.build import build_cache
from recsys.cache.codecs import CODECS, ENCODED, CacheDtype, codec, dequantise
from recsys.cache.convert import convert_cache
from recsys.cache.features import FeatureStore
from recsys.cache.integrity import array_checksum, read_manifest
from recsys.cache.manifest import (
    KEY_FIELDS,
    CacheMismatchError,
    CachePaths,
    dtype_dir,
    manifest_fingerprint,
    manifest_key,
    read_json,
)
from recsys.cache.store import load_feature_store
from recsys.data.processed import ITEMS_SCHEMA
from recsys.train.restore import restore_run
from recsys.train.run_dir import RunDirError

CONVERTED = [d for d in CODECS if d not in ENCODED]
WIDTHS = [16, 8, 16]  # entry 1 is narrower: zero-padded past column 8
N_ITEMS = 40
MISSING = 5  # an item without features: a zero row
TITLES = ["Toy Story", "Heat", "Casino", "Babe", "Se7en"]


def features(seed: int = 0) -> np.ndarray:
    """float32 [N+1, 3, 16] like a cache's: row 0 and item MISSING zero, entry 1 zero past
    column 8, columns of different spread and an outlier column (3)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_ITEMS + 1, len(WIDTHS), max(WIDTHS))) * rng.uniform(0.1, 1.0, max(WIDTHS))
    x[..., 3] *= 8
    x[0] = x[MISSING] = 0
    x[:, 1, WIDTHS[1]:] = 0
    return x.astype(np.float32)


def write_float16_cache(directory, x: np.ndarray, name: str = "enc") -> dict:
    """A complete float16 cache of ``x`` in ``directory``, as build_cache writes one."""
    paths = CachePaths.of(directory, name)
    paths.features.parent.mkdir(parents=True, exist_ok=True)
    np.save(paths.features, x.astype(np.float16))
    identity = {"name": name, "modality": "text", "layers": [0, 1, 2], "layer_widths": WIDTHS}
    manifest = {**manifest_key(identity, "f" * 64, x.shape, "float16"), "complete": True,
                "checksum": array_checksum(paths.features), "storage": codec("float16").storage(x.shape),
                "build": {"seconds": 2.0, "items_per_second": 20.0, "device": "cpu", "missing": 1,
                          "failed": 0}}
    write_json_atomic(paths.manifest, manifest)
    return manifest


@pytest.fixture
def source(tmp_path):
    """A directory holding a float16 cache of ``features()`` (encoder ``enc``)."""
    write_float16_cache(tmp_path, features())
    return tmp_path


def test_the_schema_offers_every_codec():
    assert typing.get_args(CacheDtype) == tuple(CODECS)


@pytest.mark.parametrize("dtype", list(CODECS))
def test_every_dtype_round_trips_within_its_bound(dtype):
    x, stored_as = features(), codec(dtype)
    scales = stored_as.chunk_scales(x) if stored_as.scale else None
    stored = stored_as.encode(x, scales)
    assert stored.dtype == np.dtype(stored_as.stored) and stored.shape == x.shape
    back = dequantise(torch.from_numpy(stored).view(stored_as.view),
                      None if scales is None else torch.from_numpy(scales)).float().numpy()
    relative, absolute = {"float32": (0, 0), "float16": (2**-11, 2**-25), "bfloat16": (2**-8, 0),
                          "float8_e4m3": (2**-4, 2**-10)}.get(dtype, (0, 0))
    bound = relative * np.abs(x) + absolute
    if scales is not None:  # int8: half a step of the value's own scale (+ float32 rounding)
        bound = np.broadcast_to(scales * (0.5 + 1e-4), x.shape)
    assert (np.abs(back - x) <= bound).all()
    assert not back[0].any() and not back[MISSING].any() and not back[:, 1, WIDTHS[1]:].any()


def test_int8_scales_and_the_better_scheme():
    """Scales are max|x| / 127 over items (int8) or over columns (int8_item_layer); with an
    outlier column the per-column scales reconstruct better (the default)."""
    x = features()
    channel, item_layer = codec("int8").chunk_scales(x), codec("int8_item_layer").chunk_scales(x)
    np.testing.assert_allclose(channel[0], np.abs(x).max(axis=0) / 127, rtol=1e-6)
    np.testing.assert_allclose(item_layer[..., 0], np.abs(x).max(axis=2) / 127, rtol=1e-6)

    def error(name: str, scales: np.ndarray) -> float:
        back = codec(name).encode(x, scales) * scales
        return float(np.linalg.norm(back - x) / np.linalg.norm(x))

    assert error("int8", channel) < error("int8_item_layer", item_layer)


def test_float8_saturates_instead_of_overflowing():
    x = np.array([1000.0, -1000.0, 448.0, 0.5], np.float32).reshape(1, 1, 4)
    stored = codec("float8_e4m3").encode(x)
    back = dequantise(torch.from_numpy(stored).view(torch.float8_e4m3fn))
    assert back.flatten().tolist() == [448.0, -448.0, 448.0, 0.5]


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3"])
def test_bit_patterns_are_stored_raw_and_load_back_exactly(dtype, tmp_path):
    stored_as = codec(dtype)
    x = torch.from_numpy(features()).to(stored_as.view).float().numpy()  # values the dtype holds
    write_float16_cache(tmp_path, x)  # float16 holds them exactly too
    convert_cache(tmp_path, "enc", dtype)
    raw = np.load(tmp_path / dtype / "enc.npy")
    assert raw.dtype == np.dtype(stored_as.stored)  # uint16 / uint8: numpy has no bfloat16 / float8
    bits = torch.from_numpy(x).to(stored_as.view).view(getattr(torch, stored_as.stored)).numpy()
    assert np.array_equal(raw, bits)
    for residency in ("device", "host"):
        store = load_feature_store(tmp_path / dtype, {"text": "enc"}, residency=residency)
        assert store.table("text").dtype == stored_as.view
        assert torch.equal(store.gather("text", torch.arange(N_ITEMS + 1)).float(), torch.from_numpy(x))


@pytest.mark.parametrize(("dtype", "granularity", "scales_shape"),
                         [("int8", "channel", [1, 3, 16]),
                          ("int8_item_layer", "item_layer", [N_ITEMS + 1, 3, 1])])
def test_the_manifest_records_the_scheme_and_its_checksum_covers_the_scales(
    source, dtype, granularity, scales_shape, caplog
):
    manifest = convert_cache(source, "enc", dtype)
    paths = CachePaths.of(source / dtype, "enc")
    float16 = read_manifest(CachePaths.of(source, "enc"))
    assert {k: manifest[k] for k in KEY_FIELDS} == {**{k: float16[k] for k in KEY_FIELDS}, "dtype": dtype}
    assert manifest["storage"] == {"values": "int8", "view": "int8", "scales": {
        "granularity": granularity, "dtype": "float32", "shape": scales_shape, "decode": "values * scales"}}
    assert manifest["checksum"] == {**array_checksum(paths.features), "scales": array_checksum(paths.scales)}
    assert manifest["build"]["converted_from"]["fingerprint"] == manifest_fingerprint(float16)
    assert manifest["build"]["seconds"] >= float16["build"]["seconds"]  # encoding + conversion
    assert read_json(paths.manifest) == {**manifest, "build": {k: v for k, v in manifest["build"].items()
                                                               if k != "reused"}}
    assert not paths.partial.exists() and not paths.scales_partial.exists()

    scales = np.load(paths.scales)
    scales.flat[7] *= 2  # a changed scale, same size
    with open(paths.scales, "wb") as file:
        np.save(file, scales)
    with pytest.raises(CacheMismatchError, match=r"enc\.scales\.npy does not match the checksum"):
        load_feature_store(source / dtype, {"text": "enc"})
    rebuilt = convert_cache(source, "enc", dtype)
    assert not rebuilt["build"]["reused"] and rebuilt["checksum"] == manifest["checksum"]
    assert "scales.npy does not match" in caplog.text
    assert convert_cache(source, "enc", dtype)["build"]["reused"]


def test_chunking_does_not_change_a_conversion(source, tmp_path):
    for dtype in CONVERTED:
        whole = convert_cache(source, "enc", dtype)
        chunked = convert_cache(source, "enc", dtype, tmp_path / "chunked" / dtype, chunk_rows=3)
        assert chunked["checksum"] == whole["checksum"]


def test_every_dtype_is_a_cache_of_its_own(source):
    fingerprints = {d: manifest_fingerprint(convert_cache(source, "enc", d)) for d in CONVERTED}
    fingerprints["float16"] = manifest_fingerprint(read_manifest(CachePaths.of(source, "enc")))
    assert len(set(fingerprints.values())) == len(fingerprints)


def test_a_cache_of_another_dtype_is_neither_reused_nor_read_as_float16(source, tmp_path):
    convert_cache(source, "enc", "int8")
    int8 = CachePaths.of(source / "int8", "enc")
    with pytest.raises(CacheMismatchError, match="dtype: cached 'int8', wanted 'int8_item_layer'"):
        convert_cache(source, "enc", "int8_item_layer", source / "int8", on_mismatch="refuse")
    with pytest.raises(CacheMismatchError, match="holds int8 features, not float16"):
        load_feature_store(source / "int8", {"text": "enc"}, dtype="float16")
    with pytest.raises(CacheMismatchError, match="only float16 caches are converted"):
        convert_cache(source / "int8", "enc", "bfloat16", tmp_path / "bf16")
    with pytest.raises(ValueError, match="converted from float16"):
        build_cache(None, [], "f" * 64, tmp_path, dtype="int8")
    manifest = read_json(int8.manifest)
    del manifest["storage"]  # as a manifest claiming float16 values would be
    write_json_atomic(int8.manifest, {**manifest, "dtype": "float16"})
    with pytest.raises(CacheMismatchError, match=r"is int8\[41, 3, 16\], its manifest says float16 features"):
        load_feature_store(source / "int8", {"text": "enc"})


@pytest.mark.parametrize("dtype", ["int8", "int8_item_layer"])
@pytest.mark.parametrize("residency", ["device", "host"])
@pytest.mark.parametrize("layers", [None, [0, 2], [2, 0]])  # all, a strided view, a copy
def test_gather_on_an_int8_store_equals_the_dequantised_rows(source, dtype, residency, layers):
    convert_cache(source, "enc", dtype)
    store = load_feature_store(source / dtype, {"text": "enc"}, {"text": layers}, residency=residency)
    paths = CachePaths.of(source / dtype, "enc")
    dequantised = np.load(paths.features).astype(np.float32) * np.load(paths.scales)
    dequantised = dequantised[:, layers or slice(None)]
    ids = torch.tensor([[1, 2, 0], [N_ITEMS, MISSING, MISSING]])
    got = store.gather("text", ids)
    assert store.table("text").dtype == torch.int8 and got.dtype == torch.float32
    assert torch.equal(got, torch.from_numpy(dequantised[ids.numpy()]))


def test_an_int8_store_takes_half_the_memory_and_keeps_its_dtype(source):
    convert_cache(source, "enc", "int8")
    float16 = load_feature_store(source, {"text": "enc"}, residency="device")
    int8 = load_feature_store(source / "int8", {"text": "enc"}, residency="device")
    assert 2 * int8.table("text").nbytes == float16.table("text").nbytes
    int8.float().half().to(torch.float64)  # a precision plugin must not widen the cache
    assert int8.table("text").dtype == torch.int8 and int8.scales("text").dtype == torch.float32
    with pytest.raises(ValueError, match=r"scales are given for \[\], the int8 features are \['text'\]"):
        FeatureStore({"text": int8.table("text")}, {"text": WIDTHS})


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed dataset of five titled items (no images)."""
    rows = [(i, str(i), title, None, None) for i, title in enumerate(TITLES, start=1)]
    items = pl.DataFrame(rows, schema=ITEMS_SCHEMA, orient="row")
    return one_user_dataset(items).save(tmp_path_factory.mktemp("processed") / "tiny")


def recsys_cache(processed, float16_dir, dtype: str) -> dict:
    """``recsys-cache`` of the MiniLM text cache in ``cache.dtype=dtype``; its manifest."""
    cfg = job_config("cache", [f"data.processed_dir={processed}", f"cache.dtype={dtype}",
                               f"cache.dir={dtype_dir(float16_dir, dtype)}", "encoder/image=none",
                               "cache.progress_bar=false", "encoder.text.batch_size=4"])
    return cache_cli.run(cfg)["text"]


def test_recsys_cache_converts_the_float16_cache_without_encoding_again(
    processed, tmp_path, monkeypatch, capsys
):
    int8 = recsys_cache(processed, tmp_path, "int8")  # nothing there: encodes float16, converts
    float16 = read_manifest(CachePaths.of(tmp_path, "minilm"))
    assert float16["dtype"] == "float16" and int8["dtype"] == "int8"
    assert int8["build"]["converted_from"]["fingerprint"] == manifest_fingerprint(float16)
    assert "text/minilm: [6, 7, 384] int8 converted from float16 (in" in capsys.readouterr().out
    again = convert_cache(tmp_path, "minilm", "int8", tmp_path / "again", chunk_rows=4)
    assert again["checksum"] == int8["checksum"]
    for name in ("minilm.npy", "minilm.scales.npy"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "int8" / name).read_bytes()

    build_encoder = cache_cli.build_encoder

    def not_encoding(cfg):
        encoder = build_encoder(cfg)
        encoder.encode = lambda batch: pytest.fail("the encoder ran for a converted dtype")
        return encoder

    monkeypatch.setattr(cache_cli, "build_encoder", not_encoding)
    bfloat16 = recsys_cache(processed, tmp_path, "bfloat16")
    assert not bfloat16["build"]["reused"] and bfloat16["build"]["converted_from"]["dtype"] == "float16"
    assert recsys_cache(processed, tmp_path, "int8")["build"]["reused"]
    assert "reused (nothing recomputed; converted from float16 earlier" in capsys.readouterr().out


@pytest.mark.slow
def test_recsys_train_reads_the_int8_cache_of_its_config(tmp_path, run_cli, small_synthetic, cpu_run):
    run_dir, cache_dir = tmp_path / "run", tmp_path / "data" / "cache" / "synthetic"
    args = [f"paths.data_dir={tmp_path / 'data'}", f"paths.root_dir={tmp_path}", *small_synthetic, *cpu_run,
            "adapter=iisan_intra", "encoder/image=none", "encoder.text.batch_size=64", "cache.dtype=int8",
            f"hydra.run.dir={run_dir}"]
    run_cli("recsys-train", args, tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    manifest = read_json(cache_dir / "int8" / "minilm.json")
    assert results["status"] == "complete" and results["config"]["cache"]["dir"] == str(cache_dir / "int8")
    assert manifest["dtype"] == "int8" and read_json(cache_dir / "minilm.json")["dtype"] == "float16"
    assert results["inputs"]["cache_fingerprints"] == {"text": manifest_fingerprint(manifest)}
    assert results["metrics"]["test"]["ndcg@10"] > 0

    # Tested on its own dtype: the run's figures; on float16, the source of its int8 cache: the
    # same features in other storage, no input change.
    evaluate = [f"run_dir={run_dir}", "stages=[test]", "accelerator=cpu", "cache_dtype=int8"]
    run_cli("recsys-eval", evaluate, tmp_path)
    own = json.loads((run_dir / "eval.json").read_text())
    assert own["cache_dtype"] == "int8" and own["test"] == pytest.approx(results["metrics"]["test"])
    run_cli("recsys-eval", [*evaluate[:-1], "cache_dtype=float16"], tmp_path)
    served = json.loads((run_dir / "eval.json").read_text())
    assert served["cache_dtype"] == "float16" and served["changed_inputs"] == []
    assert served["test"]["ndcg@10"] > 0 and served["test"] != own["test"]

    with pytest.raises(FileNotFoundError, match=r"no float8_e4m3 text cache .*cache\.dtype=float8_e4m3`"):
        restore_run(run_dir, cache_dtype="float8_e4m3")  # not converted yet: the command that does it

    # A bfloat16 cache that names another float16 source holds other features: refused.
    run_cli("recsys-cache", [f"paths.data_dir={tmp_path / 'data'}", *small_synthetic, "encoder/image=none",
                             "cache.dtype=bfloat16", "cache.progress_bar=false"], tmp_path)
    bfloat16 = cache_dir / "bfloat16" / "minilm.json"
    assert restore_run(run_dir, cache_dtype="bfloat16").changed_inputs == []
    record = read_json(bfloat16)
    record["build"]["converted_from"]["fingerprint"] = "0" * 64
    write_json_atomic(bfloat16, record)
    with pytest.raises(RunDirError, match=r"cache_sources\.text: trained on '[0-9a-f]{64}', now '0{64}'"):
        restore_run(run_dir, cache_dtype="bfloat16")
