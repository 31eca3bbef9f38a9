"""Nothing stale: media files enter the prep and cache fingerprints by stat or content, each
cache is keyed by exactly what its encoder reads, and a run can name the caches it read; a
rebuild that writes the same features (media re-laid out with new mtimes) still names them."""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import job_config, one_user_dataset
from PIL import Image

from data_prep.prep import run as prep
from recsys.cache.convert import convert_cache
from recsys.cache.file_fingerprint import directory_fingerprint, file_fingerprint
from recsys.cache.inputs import cache_inputs_fingerprint, encoder_fields, inputs_fingerprint
from recsys.cache.integrity import current_cache_fingerprint, read_manifest
from recsys.cache.manifest import CacheMismatchError, CachePaths, known_fingerprints, manifest_fingerprint
from recsys.cache.store import load_feature_store
from recsys.cli.cache import build_caches
from recsys.data.processed import ITEMS_SCHEMA, ProcessedDataset
from recsys.train.builders import build_datamodule, build_item_source
from recsys.train.run_dir import inputs_changes

N_ITEMS = 5


def replace_keeping_stat(path: Path, data: bytes) -> None:
    """Overwrite ``path`` with other bytes of the same size and give it back its mtime: the
    replacement a stat fingerprint cannot see."""
    stat = path.stat()
    assert len(data) == stat.st_size
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ---- files and directories ---------------------------------------------------------------
def test_file_and_directory_fingerprints_see_changes(tmp_path):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "a.jpg").write_bytes(b"aaaa")
    (media / "sub" / "b.jpg").write_bytes(b"bb")
    assert file_fingerprint(tmp_path / "absent.jpg", "stat") is None
    assert set(file_fingerprint(media / "a.jpg", "stat")) == {"size", "mtime_ns"}
    assert set(file_fingerprint(media / "a.jpg", "content")) == {"size", "sha256"}
    with pytest.raises(ValueError, match="not one of"):
        file_fingerprint(media / "a.jpg", "mtime")

    seen = {directory_fingerprint(media, "stat")["sha256"]}
    assert directory_fingerprint(media, "stat")["files"] == 2
    for change in (
        lambda: (media / "c.jpg").write_bytes(b"c"),  # added
        lambda: (media / "a.jpg").write_bytes(b"aaaaa"),  # rewritten
        lambda: (media / "sub" / "b.jpg").rename(media / "sub" / "d.jpg"),  # renamed
        lambda: (media / "c.jpg").unlink(),  # removed
    ):
        change()
        seen.add(directory_fingerprint(media, "stat")["sha256"])
    assert len(seen) == 5

    stat_before = directory_fingerprint(media, "stat")
    content_before = directory_fingerprint(media, "content")
    replace_keeping_stat(media / "a.jpg", b"AAAAA")
    assert directory_fingerprint(media, "stat") == stat_before  # the documented blind spot
    assert directory_fingerprint(media, "content") != content_before


# ---- recsys-prep: a raw images_dir ---------------------------------------------------------
def _iisan_raw(root: Path) -> list[str]:
    """Overrides for a tiny IISAN-format dataset (2 users, items A1 and A2) with an
    images_dir holding A1.jpg only."""
    (root / "users.tsv").write_text("u1\tA1 A2 A1 A2 A1\nu2\tA2 A1 A2 A1 A2\n")
    (root / "items.tsv").write_text("A1\tfirst item\nA2\tsecond item\n")
    (root / "images").mkdir()
    (root / "images" / "A1.jpg").write_bytes(b"one image")
    return [
        "data=scientific",
        f"paths.data_dir={root / 'data'}",
        f"data.raw.users_file={root / 'users.tsv'}",
        f"data.raw.items_file={root / 'items.tsv'}",
        f"data.raw.images_dir={root / 'images'}",
    ]


def test_prep_rebuilds_when_a_raw_image_is_replaced_or_added(tmp_path):
    overrides = _iisan_raw(tmp_path)
    images = tmp_path / "images"

    def prepared(*extra: str) -> tuple[int, list]:
        processed = prep(job_config("prep", [*overrides, *extra]))
        stamp = (processed / "stats.json").stat().st_mtime_ns
        return stamp, ProcessedDataset.load(processed).items["image_path"].to_list()

    stamp, paths = prepared()
    assert paths == [str(images / "A1.jpg"), None]
    assert prepared()[0] == stamp  # nothing changed: reused

    (images / "A2.jpg").write_bytes(b"two")  # a poster added later gives its item an image
    stamp_added, paths = prepared()
    assert stamp_added != stamp and paths == [str(images / "A1.jpg"), str(images / "A2.jpg")]

    (images / "A1.jpg").write_bytes(b"another image")  # replaced under the same name
    stamp_replaced, _ = prepared()
    assert stamp_replaced != stamp_added

    replace_keeping_stat(images / "A1.jpg", b"ANOTHER IMAGE")
    assert prepared()[0] == stamp_replaced  # stat: cheap, blind to this (data_prep/README.md)
    stamp_content, _ = prepared("data.media_fingerprint=content")  # another fingerprint: rebuilt
    assert stamp_content != stamp_replaced
    assert prepared("data.media_fingerprint=content")[0] == stamp_content
    replace_keeping_stat(images / "A1.jpg", b"yet another!!")
    assert prepared("data.media_fingerprint=content")[0] != stamp_content  # content sees it


# ---- caches: rebuilt exactly when what their encoder reads changes -----------------------
@pytest.fixture
def posters(shared_data, tmp_path) -> Path:
    """Writable copies of the first N_ITEMS MovieLens posters."""
    source = shared_data / "movielens-100k-posters" / "data" / "posters"
    out = tmp_path / "posters"
    out.mkdir()
    for i in range(1, N_ITEMS + 1):
        shutil.copyfile(source / f"{i}.jpg", out / f"{i}.jpg")
    return out


def save_items(directory: Path, titles: list[str], posters: Path) -> Path:
    """A one-user processed dataset of items 1..N with ``titles`` and posters ``<i>.jpg``."""
    items = pl.DataFrame(
        [(i, str(i), title, str(posters / f"{i}.jpg"), None) for i, title in enumerate(titles, start=1)],
        schema=ITEMS_SCHEMA,
        orient="row",
    )
    return one_user_dataset(items).save(directory, overwrite=True)


TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)"]


def cache_config(processed: Path, cache_dir: Path, *extra: str):
    return job_config("cache", [
        f"data.processed_dir={processed}", f"cache.dir={cache_dir}", "cache.progress_bar=false",
        "encoder.image.resolution=64", *extra,
    ])


def reused(manifests: dict) -> dict[str, bool]:
    return {m: man["build"]["reused"] for m, man in manifests.items()}


def test_changed_poster_rebuilds_the_image_cache_and_a_changed_title_the_text_cache(posters, tmp_path):
    processed = save_items(tmp_path / "processed", TITLES, posters)
    cfg = cache_config(processed, tmp_path / "cache")
    assert reused(build_caches(cfg)) == {"text": False, "image": False}
    assert reused(build_caches(cfg)) == {"text": True, "image": True}
    image_cache = tmp_path / "cache" / "efficientnet_lite0.npy"
    before = np.load(image_cache)

    shutil.copyfile(posters / "2.jpg", posters / "1.jpg")  # same path, other poster
    assert reused(build_caches(cfg)) == {"text": True, "image": False}
    after = np.load(image_cache)
    assert np.array_equal(after[1], after[2]) and not np.array_equal(after[1], before[1])

    save_items(processed, [TITLES[0], "Another Title", *TITLES[2:]], posters)
    assert reused(build_caches(cfg)) == {"text": False, "image": True}

    Image.new("RGB", (32, 48), "red").save(posters / "3.jpg", format="BMP")  # fixed size
    assert reused(build_caches(cfg)) == {"text": True, "image": False}
    blue = io.BytesIO()
    Image.new("RGB", (32, 48), "blue").save(blue, format="BMP")
    replace_keeping_stat(posters / "3.jpg", blue.getvalue())
    assert reused(build_caches(cfg)) == {"text": True, "image": True}  # stat's blind spot
    content = cache_config(processed, tmp_path / "cache", "data.media_fingerprint=content")
    assert reused(build_caches(content)) == {"text": True, "image": False}  # content sees it
    assert reused(build_caches(content)) == {"text": True, "image": True}


def test_feature_store_refuses_a_cache_whose_media_changed(posters, tmp_path):
    processed = save_items(tmp_path / "processed", TITLES, posters)
    cfg = cache_config(processed, tmp_path / "cache", "encoder/text=none")
    manifest = build_caches(cfg)["image"]
    records = ProcessedDataset.load(processed).items.to_dicts()

    def expected() -> str:
        return cache_inputs_fingerprint(manifest["encoder"], records, "stat")

    assert encoder_fields(manifest["encoder"]) == ("image_path",)
    caches = {"image": "efficientnet_lite0"}
    load_feature_store(tmp_path / "cache", caches, fingerprint={"image": expected()})
    (posters / "4.jpg").write_bytes((posters / "5.jpg").read_bytes())
    with pytest.raises(CacheMismatchError, match="another dataset .or other media files"):
        load_feature_store(tmp_path / "cache", caches, fingerprint={"image": expected()})


def test_inputs_fingerprint_covers_only_the_fields_read(tmp_path):
    image = tmp_path / "1.jpg"
    image.write_bytes(b"pixels")
    records = [{"item_id": 1, "title": "A", "image_path": str(image), "description": None}]
    text = inputs_fingerprint(records, ("title",), "stat")
    picture = inputs_fingerprint(records, ("image_path",), "stat")
    everything = inputs_fingerprint(records, None, "stat")
    records[0]["description"] = "new"
    assert inputs_fingerprint(records, ("title",), "stat") == text
    assert inputs_fingerprint(records, None, "stat") != everything  # no declared field: all
    image.write_bytes(b"other pixels")
    assert inputs_fingerprint(records, ("title",), "stat") == text
    assert inputs_fingerprint(records, ("image_path",), "stat") != picture
    assert inputs_fingerprint(records, ("image_path",), "content") != inputs_fingerprint(
        records, ("image_path",), "stat")


# ---- what a run read: manifest fingerprints -----------------------------------------------
def test_training_facts_name_the_caches_read(posters, tmp_path):
    processed = save_items(tmp_path / "processed", TITLES, posters)
    cache_dir = tmp_path / "cache"
    train = job_config("train", [
        f"data.processed_dir={processed}", f"cache.dir={cache_dir}", "cache.progress_bar=false",
        "encoder/image=none", "adapter=frozen", "data.protocol.window=3",
    ])
    assert current_cache_fingerprint(cache_dir, "minilm") is None
    manifest = build_caches(train, modalities=["text"])["text"]
    fingerprint = current_cache_fingerprint(cache_dir, "minilm")
    assert fingerprint == manifest_fingerprint(manifest) == manifest_fingerprint(
        read_manifest(CachePaths.of(cache_dir, "minilm")))
    assert len(fingerprint) == 64 and manifest_fingerprint({**manifest, "build": {}}) == fingerprint

    store, facts = build_item_source(train, build_datamodule(train))
    assert facts["cache_fingerprints"] == {"text": fingerprint} and store.modalities == ["text"]
    assert facts["cache_bytes"] == (cache_dir / "minilm.npy").stat().st_size
    other = {**manifest, "checksum": {**manifest["checksum"], "sha256": "0" * 64}}
    assert manifest_fingerprint(other) != fingerprint
    with pytest.raises(ValueError, match="lacks"):
        manifest_fingerprint({k: v for k, v in manifest.items() if k != "checksum"})
    (cache_dir / "minilm.json").write_text("{")  # at training time: named, with the command
    with pytest.raises(CacheMismatchError, match="minilm.json is not valid JSON .*`recsys-cache data="):
        build_item_source(train, build_datamodule(train))

    ids = job_config("train", [f"data.processed_dir={processed}", "adapter=id", "encoder/text=none",
                               "encoder/image=none", "data.protocol.window=3"])
    assert build_item_source(ids, build_datamodule(ids))[1]["cache_fingerprints"] == {}


def test_a_bit_identical_rebuild_still_names_the_runs_earlier_builds(posters, tmp_path):
    processed = save_items(tmp_path / "processed", TITLES, posters)
    cache_dir = tmp_path / "cache"
    cfg = cache_config(processed, cache_dir, "encoder/text=none")
    first = build_caches(cfg)["image"]
    first_int8 = convert_cache(cache_dir, "efficientnet_lite0", "int8")
    trained = {"inputs": {"data_fingerprint": "d",
                          "cache_fingerprints": {"image": manifest_fingerprint(first)}}}

    def today(manifest: dict) -> dict:
        return {"data_fingerprint": "d", "cache_fingerprints": {"image": manifest_fingerprint(manifest)}}

    for poster in posters.iterdir():  # re-laid out: same bytes, new mtimes
        os.utime(poster, ns=(poster.stat().st_atime_ns, poster.stat().st_mtime_ns + 10**9))
    second = build_caches(cfg)["image"]
    assert not second["build"]["reused"] and second["checksum"] == first["checksum"]
    assert manifest_fingerprint(second) != manifest_fingerprint(first)
    assert second["same_features_as"] == [manifest_fingerprint(first)]
    assert known_fingerprints(second) == {manifest_fingerprint(first), manifest_fingerprint(second)}
    assert inputs_changes(trained, today(second), {"image": second["same_features_as"]}) == []
    assert inputs_changes(trained, today(second)) != []  # without the record: a changed cache
    second_int8 = convert_cache(cache_dir, "efficientnet_lite0", "int8")  # its source changed
    assert not second_int8["build"]["reused"]
    assert second_int8["same_features_as"] == [manifest_fingerprint(first_int8)]

    for poster in posters.iterdir():  # again: every earlier build is still known
        os.utime(poster, ns=(poster.stat().st_atime_ns, poster.stat().st_mtime_ns + 10**9))
    third = build_caches(cfg)["image"]
    assert third["same_features_as"] == sorted(known_fingerprints(second))
    train = job_config("train", [f"data.processed_dir={processed}", f"cache.dir={cache_dir}",
                                 "encoder/text=none", "adapter=frozen", "data.protocol.window=3",
                                 "encoder.image.resolution=64"])
    facts = build_item_source(train, build_datamodule(train))[1]
    assert facts["cache_same_features_as"] == {"image": third["same_features_as"]}

    shutil.copyfile(posters / "2.jpg", posters / "1.jpg")  # other features: no longer the same
    fourth = build_caches(cfg)["image"]
    assert fourth["checksum"] != third["checksum"] and "same_features_as" not in fourth
    assert inputs_changes(trained, today(fourth), {"image": []}) != []
