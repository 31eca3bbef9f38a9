"""ProcessedDataset: round trip, validation errors naming file and field, atomic writes,
fingerprint."""

import polars as pl
import pytest

from data_prep.protocol import apply_protocol
from data_prep.readers import RawDataset, items_frame
from recsys.atomic_io import atomic_path
from recsys.data.processed import ProcessedDataError, ProcessedDataset


@pytest.fixture
def dataset() -> ProcessedDataset:
    keys = ["a", "b", "c", "d"]
    raw = RawDataset(
        items_frame(keys, ["A", "B", "C", "D"], ["/img/a.jpg", None, None, None]),
        pl.DataFrame({"user_key": ["u"] * 5 + ["v"] * 6,
                      "item_key": list("abcda") + list("dcbadc"),
                      "timestamp": list(range(11))}),
    )
    return apply_protocol(raw, min_interactions=5, keep_last=13, dataset="toy")


def test_save_load_round_trip(tmp_path, dataset):
    path = dataset.save(tmp_path / "toy")
    loaded = ProcessedDataset.load(path)
    assert loaded.items.equals(dataset.items) and loaded.users.equals(dataset.users)
    assert loaded.interactions.equals(dataset.interactions)
    assert loaded.stats == dataset.stats
    assert loaded.fingerprint() == dataset.fingerprint()
    assert loaded.items.schema["image_path"] == pl.String
    assert not list(tmp_path.glob(".*"))  # no staging leftovers


def test_fingerprint_depends_on_item_fields(dataset):
    renamed = dataset.items.with_columns(pl.col("title").str.replace("A", "A2"))
    changed = ProcessedDataset(renamed, dataset.users, dataset.interactions, dataset.stats)
    assert changed.fingerprint() != dataset.fingerprint()
    described = dataset.items.with_columns(description=pl.lit("new"))
    same = ProcessedDataset(described, dataset.users, dataset.interactions, dataset.stats)
    assert same.fingerprint() == dataset.fingerprint()  # description is not part of it


def test_media_columns_join_the_fingerprint_only_when_used(tmp_path, dataset):
    assert dataset.items.schema["video_path"] == dataset.items.schema["audio_path"] == pl.String
    # a dataset processed before the media columns existed: loads, same fingerprint
    legacy = ProcessedDataset(dataset.items.drop("video_path", "audio_path"), dataset.users,
                              dataset.interactions, dataset.stats)
    loaded = ProcessedDataset.load(legacy.save(tmp_path / "legacy"))
    assert "video_path" not in loaded.items.columns
    assert loaded.fingerprint() == dataset.fingerprint()
    for column in ("video_path", "audio_path"):
        media = dataset.items.with_columns(
            pl.when(pl.col("item_id") == 2).then(pl.lit("/media/b")).otherwise(pl.col(column))
            .alias(column))
        changed = ProcessedDataset(media, dataset.users, dataset.interactions, dataset.stats)
        assert changed.fingerprint() != dataset.fingerprint()
    assert dataset.stats["missing"] == {"image_path": 3, "video_path": 4, "audio_path": 4,
                                        "description": 4}


@pytest.mark.parametrize("file, column, change, message", [
    ("items.parquet", "item_id", pl.col("item_id").cast(pl.Int64), "type Int64, expected Int32"),
    ("items.parquet", "title", pl.col("title").str.replace("B", " "), "non-empty"),
    ("items.parquet", "audio_path", pl.col("item_id"), "'audio_path' has type Int32"),
    ("users.parquet", "user_id", pl.col("user_id") + 1, "0..U-1"),
    ("interactions.parquet", "position", pl.col("position").reverse(), "sorted by"),
])
def test_load_names_the_bad_file_and_field(tmp_path, dataset, file, column, change, message):
    path = dataset.save(tmp_path / "toy")
    frame = pl.read_parquet(path / file).with_columns(change.alias(column))
    frame.write_parquet(path / file)
    with pytest.raises(ProcessedDataError, match=message) as error:
        ProcessedDataset.load(path)
    assert str(path / file) in str(error.value)


def test_load_reports_missing_columns_and_files(tmp_path, dataset):
    path = dataset.save(tmp_path / "toy")
    pl.read_parquet(path / "users.parquet").drop("key").write_parquet(path / "users.parquet")
    with pytest.raises(ProcessedDataError, match="users.parquet: missing column 'key'"):
        ProcessedDataset.load(path)
    (path / "stats.json").unlink()
    with pytest.raises(ProcessedDataError, match="stats.json not found.*recsys-prep"):
        ProcessedDataset.load(path)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path, dataset):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new") as staging:
        staging.mkdir()
        (staging / "items.parquet").write_bytes(b"partial")
        raise RuntimeError("reader failed")
    assert list(tmp_path.iterdir()) == []

    dataset.save(tmp_path / "old")
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "old") as st:
        st.mkdir()
        (st / "stats.json").write_text("{}")
        raise RuntimeError("protocol failed")
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_existing_directory_needs_overwrite(tmp_path, dataset):
    dataset.save(tmp_path / "toy")
    with pytest.raises(FileExistsError, match="overwrite"):
        dataset.save(tmp_path / "toy")
    dataset.save(tmp_path / "toy", overwrite=True)
    assert ProcessedDataset.load(tmp_path / "toy").num_items == 4
