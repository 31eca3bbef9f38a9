"""Readers: error handling (raise with file + line, or skip and count), MovieLens specifics,
Amazon 2018 on self-written files in the real format, the registry."""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from data_prep.protocol import apply_protocol
from data_prep.readers import RawDataError, ReadContext, get_reader, list_readers, read_raw

ITEMS_TSV = "A1\tWidget &amp; Co\nA2\t 2&#39;&#39; Bracket\nA3\tThird\n"


def _iisan(tmp_path: Path, users: str, items: str = ITEMS_TSV, on_error: str = "raise"):
    (tmp_path / "users.tsv").write_text(users, encoding="utf-8")
    (tmp_path / "items.tsv").write_text(items, encoding="utf-8")
    raw = {"users_file": str(tmp_path / "users.tsv"), "items_file": str(tmp_path / "items.tsv")}
    return read_raw("amazon_iisan", raw, ReadContext(on_error=on_error))


def test_iisan_local_images_are_linked_and_missing_ones_null(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "A2.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "users.tsv").write_text("u1\tA1 A2 A3\n", encoding="utf-8")
    (tmp_path / "items.tsv").write_text(ITEMS_TSV, encoding="utf-8")
    raw = {"users_file": str(tmp_path / "users.tsv"), "items_file": str(tmp_path / "items.tsv"),
           "images_dir": str(images)}
    items = read_raw("amazon_iisan", raw, ReadContext()).items
    assert items["image_path"].to_list() == [None, str(images / "A2.jpg"), None]
    with pytest.raises(RawDataError, match="image directory not found"):
        read_raw("amazon_iisan", raw | {"images_dir": str(tmp_path / "nope")}, ReadContext())


def test_registry_lists_the_builtin_readers():
    assert {"amazon_iisan", "movielens", "amazon2018", "microlens", "synthetic"} <= set(list_readers())
    with pytest.raises(KeyError, match="unknown reader"):
        get_reader("nope")


def test_iisan_titles_are_unescaped(tmp_path):
    raw = _iisan(tmp_path, "u1\tA1 A2 A3\n")
    assert raw.items["title"].to_list() == ["Widget & Co", "2'' Bracket", "Third"]
    assert raw.interactions["item_key"].to_list() == ["A1", "A2", "A3"]


BAD_RECORDS = [
    # (users file, items file, reason, file that is named, line number)
    ("u1\tA1 A2\nno-tab-here\n", ITEMS_TSV, "malformed_line", "users.tsv", 2),
    ("u1\tA1 A9 A2\n", ITEMS_TSV, "unknown_item", "users.tsv", 1),
    ("u1\tA1 A2\nu2\tA3\nu1\tA3\n", ITEMS_TSV, "duplicate_user", "users.tsv", 3),
    ("u1\tA1 A2\n", ITEMS_TSV + "A4\t   \n", "empty_title", "items.tsv", 4),
    ("u1\tA1 A2\n", ITEMS_TSV + "A5 no tab\n", "malformed_line", "items.tsv", 4),
]


@pytest.mark.parametrize("users, items, reason, filename, line", BAD_RECORDS)
def test_bad_records_raise_with_file_and_line(tmp_path, users, items, reason, filename, line):
    with pytest.raises(RawDataError) as error:
        _iisan(tmp_path, users, items)
    message = str(error.value)
    assert f"{tmp_path / filename}:{line}:" in message
    assert "on_error=skip" in message


@pytest.mark.parametrize("users, items, reason, filename, line", BAD_RECORDS)
def test_bad_records_are_skipped_and_counted(tmp_path, caplog, users, items, reason, filename,
                                             line):
    raw = _iisan(tmp_path, users, items, on_error="skip")
    assert raw.dropped == {reason: 1}
    assert reason in caplog.text and f"{filename}:{line}" in caplog.text
    assert "A9" not in raw.interactions["item_key"].to_list()


def test_skipped_records_reach_stats(tmp_path):
    users = "".join(f"u{i}\tA1 A2 A3 A1 A9 A2\n" for i in range(3))
    raw = _iisan(tmp_path, users, on_error="skip")
    dataset = apply_protocol(raw, min_interactions=5, keep_last=13, dataset="toy")
    assert dataset.stats["dropped"]["unknown_item"] == 3
    assert dataset.interactions.height == 15


def test_missing_raw_file_points_to_readme(tmp_path):
    raw = {"users_file": str(tmp_path / "nope.tsv"), "items_file": str(tmp_path / "x.tsv")}
    with pytest.raises(RawDataError, match="data_prep/README.md"):
        read_raw("amazon_iisan", raw, ReadContext())


def test_on_error_must_be_raise_or_skip():
    with pytest.raises(ValueError, match="on_error"):
        ReadContext(on_error="ignore")


@pytest.fixture(scope="module")
def movielens(shared_data):
    root = shared_data / "movielens-100k-posters"
    raw_cfg = {
        "ratings_file": str(root / "ml-100k/u.data"),
        "items_file": str(root / "ml-100k/u.item"),
        "overviews_file": str(root / "data/items.csv"),
        "posters_dir": str(root / "data/posters"),
    }
    raw = read_raw("movielens", raw_cfg, ReadContext())
    return root, apply_protocol(raw, min_interactions=5, keep_last=None, dataset="movielens")


def test_movielens_sequences_follow_a_stable_sort_by_user_and_time(movielens):
    root, dataset = movielens
    rows = [tuple(map(int, line.split())) for line in open(root / "ml-100k/u.data")]
    expected = sorted(rows, key=lambda row: (row[0], row[3]))  # stable: ties keep file order
    keys = dataset.items["key"].cast(pl.Int64).to_numpy()
    users = dataset.users["key"].cast(pl.Int64).to_numpy()
    inter = dataset.interactions
    actual = list(zip(users[inter["user_id"].to_numpy()].tolist(),
                      keys[inter["item_id"].to_numpy() - 1].tolist(),
                      inter["timestamp"].to_list(), strict=True))
    assert actual == [(u, i, t) for u, i, _, t in expected]
    assert (dataset.num_users, dataset.num_items, inter.height) == (943, 1682, 100_000)


def test_movielens_missing_posters_latin1_titles_and_overviews(movielens):
    _, dataset = movielens
    missing_ids = {330, 387, 563, 767, 868, 907, 1026, 1331, 1340, 1346, 1359, 1420, 1431,
                   1498, 1516, 1536, 1568, 1586, 1667}
    items = dataset.items
    no_poster = items.filter(pl.col("image_path").is_null())["key"].cast(pl.Int64).to_list()
    assert set(no_poster) == missing_ids
    assert dataset.stats["missing"]["image_path"] == 19
    assert all(Path(p).is_file() for p in items["image_path"].drop_nulls().to_list()[:50])
    titles = dict(zip(items["key"].to_list(), items["title"].to_list(), strict=True))
    assert titles["543"] == "Misérables, Les (1995)"
    assert titles["1"] == "Toy Story (1995)"
    assert items["description"].null_count() == 1682 - 1664
    toy_story = items.filter(pl.col("key") == "1")["description"].item()
    assert toy_story.startswith("Led by Woody")


def _write_gz_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


@pytest.fixture
def amazon2018_files(tmp_path):
    meta = [
        {"asin": "P1", "title": "Drill &amp; Bits", "imageURL": ["http://x/1.jpg"],
         "description": ["Strong.", "Fast."]},
        {"asin": "P2", "title": "Saw", "imageURLHighRes": []},
        {"asin": "P3", "title": "Glue", "description": []},
        {"asin": "P4", "title": "Tape"},
    ]
    reviews = []  # (reviewer, asin, time), written in item order like the real files
    for asin, events in {"P1": [("B", 30), ("A", 20), ("C", 5)],
                         "P2": [("A", 10), ("B", 10), ("C", 6)],
                         "P3": [("A", 20), ("B", 50), ("C", 7)],
                         "P4": [("A", 40), ("B", 10), ("C", 8)]}.items():
        reviews += [{"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0}
                    for user, t in events]
    _write_gz_lines(tmp_path / "Tools.json.gz", [json.dumps(r) for r in reviews])
    _write_gz_lines(tmp_path / "meta_Tools.json.gz", [json.dumps(m) for m in meta])
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "P2.jpg").write_bytes(b"jpeg")
    return {"category": "Tools", "reviews_file": str(tmp_path / "Tools.json.gz"),
            "meta_file": str(tmp_path / "meta_Tools.json.gz"),
            "image_dir": str(tmp_path / "images")}


def test_amazon2018_reader_on_real_format(amazon2018_files, tmp_path):
    raw = read_raw("amazon2018", amazon2018_files, ReadContext())
    inter = raw.interactions
    by_user = inter.group_by("user_key", maintain_order=True).agg("item_key")
    assert by_user["user_key"].to_list() == ["B", "A", "C"]  # first appearance in the file
    # chronological, ties (A: P1 and P3 at 20; B: P2 and P4 at 10) keep file order
    assert by_user["item_key"].to_list() == [
        ["P2", "P4", "P1", "P3"], ["P2", "P1", "P3", "P4"], ["P1", "P2", "P3", "P4"]]
    items = raw.items
    assert items["title"].to_list() == ["Drill & Bits", "Saw", "Glue", "Tape"]
    assert items["description"].to_list() == ["Strong. Fast.", None, None, None]
    assert items["image_path"].to_list() == [None, str(tmp_path / "images" / "P2.jpg"), None,
                                             None]


def test_amazon2018_bad_lines(amazon2018_files, tmp_path):
    reviews = tmp_path / "Tools.json.gz"
    with gzip.open(reviews, "rt") as lines:
        good = lines.read().splitlines()
    _write_gz_lines(reviews, good[:2] + ["{not json", json.dumps({"asin": "P1"}),
                                         json.dumps({"reviewerID": "A", "asin": "P9",
                                                     "unixReviewTime": 1})] + good[2:])
    with pytest.raises(RawDataError, match=f"{reviews}:3: invalid JSON"):
        read_raw("amazon2018", amazon2018_files, ReadContext())
    raw = read_raw("amazon2018", amazon2018_files, ReadContext(on_error="skip"))
    assert raw.dropped == {"malformed_line": 2, "unknown_item": 1}
    assert raw.interactions.height == len(good)
