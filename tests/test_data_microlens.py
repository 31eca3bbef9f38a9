"""MicroLens reader on self-written files in the release's layout: CSV titles with commas and
quotes, optional headers, timestamp order, media paths, bad lines (raise / skip + count)."""

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from conftest import job_config
from PIL import Image

from data_prep.prep import run
from data_prep.readers import RawDataError, ReadContext, read_raw
from recsys.data.processed import ProcessedDataset

TITLES = [  # one CSV record each; item 3's title spans two lines, item 4's is empty, "7" is malformed
    'item,title',
    '1,"Cats, dogs and ""friends"""',
    '2,Plain title, with an unquoted comma',
    '3,"Two-line\ntitle &amp; more"',
    '4,"  "',
    '5,Fifth',
    '6,Sixth',
    '7',
]
PAIRS = [
    "user,item,timestamp",
    "u2,3,500", "u1,2,300", "u1,1,100", "u2,1,100", "u1,3,300",  # lines 2-6
    "u1,99,50",  # line 7: unknown item
    "u2,2,200", "u1,5,400", "u1,6,50",
    "u2,4,50",  # line 11: item 4 was skipped (empty title)
    "u2,5,600",
    "bad line",  # line 13: malformed
    "u2,6,700", "u3,1,1", "u3,2,2",
]


def _write_video(path: Path, frames: int = 2, size: int = 16) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write(root: Path, titles: list[str] = TITLES, pairs: list[str] = PAIRS) -> dict:
    """The raw files under ``root``; returns the reader's raw config."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "titles.csv").write_text("\n".join(titles) + "\n", encoding="utf-8")
    (root / "pairs.csv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    for name in ("covers", "videos", "audio"):
        (root / name).mkdir(exist_ok=True)
    for key in ("1", "2"):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(root / "covers" / f"{key}.jpg")
    _write_video(root / "videos" / "1.mp4")
    soundfile.write(root / "audio" / "2.wav", np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    return {"pairs": str(root / "pairs.csv"), "titles": str(root / "titles.csv"),
            "covers_dir": str(root / "covers"), "videos_dir": str(root / "videos"),
            "audio_dir": str(root / "audio"),
            "suffixes": {"cover": ".jpg", "video": ".mp4", "audio": ".wav"}}


def _sequences(raw) -> dict[str, list[str]]:
    by_user = raw.interactions.group_by("user_key", maintain_order=True).agg("item_key")
    return dict(zip(by_user["user_key"].to_list(), by_user["item_key"].to_list(), strict=True))


def test_titles_timestamps_media_and_skipped_lines(tmp_path):
    raw = read_raw("microlens", _write(tmp_path), ReadContext(on_error="skip"))
    assert raw.dropped == {"empty_title": 1, "malformed_line": 2, "unknown_item": 2}
    items = raw.items
    assert items["key"].to_list() == ["1", "2", "3", "5", "6"]
    assert items["title"].to_list()[:3] == [
        'Cats, dogs and "friends"', "Plain title, with an unquoted comma", "Two-line\ntitle & more"]
    assert items["image_path"].to_list() == [str(tmp_path / "covers" / "1.jpg"),
                                             str(tmp_path / "covers" / "2.jpg"), None, None, None]
    assert items["video_path"].to_list() == [str(tmp_path / "videos" / "1.mp4")] + [None] * 4
    assert items["audio_path"].to_list() == [None, str(tmp_path / "audio" / "2.wav")] + [None] * 3
    # users in order of first appearance; by timestamp, ties (u1: items 2 and 3 at 300) in file order
    assert _sequences(raw) == {"u2": ["1", "2", "3", "5", "6"], "u1": ["6", "1", "2", "3", "5"],
                               "u3": ["1", "2"]}
    assert raw.interactions["timestamp"].to_list()[:5] == [100, 200, 500, 600, 700]


def test_headerless_files_read_the_same(tmp_path):
    with_header = read_raw("microlens", _write(tmp_path / "a"), ReadContext(on_error="skip"))
    headerless = read_raw("microlens", _write(tmp_path / "b", TITLES[1:], PAIRS[1:]),
                                         ReadContext(on_error="skip"))
    assert headerless.items["title"].equals(with_header.items["title"])
    assert headerless.interactions.equals(with_header.interactions)
    assert headerless.dropped == with_header.dropped


def test_bad_lines_raise_with_file_and_line(tmp_path):
    raw = _write(tmp_path)
    with pytest.raises(RawDataError, match="on_error=skip") as error:
        read_raw("microlens", raw, ReadContext())
    assert f"{tmp_path / 'titles.csv'}:6: item '4' has an empty title" in str(error.value)

    _write(tmp_path, [t for t in TITLES if t[0] not in "47"])
    with pytest.raises(RawDataError) as error:
        read_raw("microlens", raw, ReadContext())
    assert f"{tmp_path / 'pairs.csv'}:7: item '99' has no title" in str(error.value)

    _write(tmp_path, [t for t in TITLES if t[0] not in "47"], [p for p in PAIRS if ",99," not in p])
    with pytest.raises(RawDataError, match=f"{tmp_path / 'pairs.csv'}:10: item '4'"):
        read_raw("microlens", raw, ReadContext())


def test_tsv_sequences_layout(tmp_path):
    raw = _write(tmp_path)
    (tmp_path / "pairs.tsv").write_text("u1\t6 1 2 3 5\nu2\t1 2 99\n", encoding="utf-8")
    read = read_raw("microlens", raw | {"pairs": str(tmp_path / "pairs.tsv")},
                                   ReadContext(on_error="skip"))
    assert _sequences(read) == {"u1": ["6", "1", "2", "3", "5"], "u2": ["1", "2"]}
    assert "timestamp" not in read.interactions.columns
    assert read.dropped["unknown_item"] == 1


def test_recsys_prep_with_the_microlens_config(tmp_path):
    raw = _write(tmp_path / "raw")
    overrides = [f"data.raw.{name}={value}" for name, value in raw.items() if name != "suffixes"]
    cfg = job_config("prep", ["data=microlens", f"paths.data_dir={tmp_path / 'data'}", *overrides])
    dataset = ProcessedDataset.load(run(cfg))
    stats = dataset.stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 5, 10)
    assert stats["dropped"] == {"empty_title": 1, "malformed_line": 2, "unknown_item": 2,
                                "users_below_min_interactions": 1,
                                "interactions_of_dropped_users": 2,
                                "interactions_beyond_keep_last": 0,
                                "items_without_interactions": 0}
    assert stats["missing"] == {"image_path": 3, "video_path": 4, "audio_path": 4, "description": 5}
    assert dataset.items["video_path"][0] == str(tmp_path / "raw" / "videos" / "1.mp4")
    assert dataset.interactions["timestamp"].to_list()[:5] == [100, 200, 500, 600, 700]
