"""Reader for MicroLens-100k (Ni et al. 2023, "A Content-Driven Micro-Video Recommendation Dataset
at Scale", github westlake-repl/MicroLens): micro-videos with English titles, cover images and,
where downloaded, the raw videos and their audio tracks.

Raw config (``conf/data/microlens.yaml: raw``):
    pairs: the interactions, chosen by suffix:
        ``MicroLens-100k_pairs.csv``: one interaction a line, ``user,item,timestamp`` (integer
        timestamp, milliseconds in the release); a header line is optional. Users are
        ordered by first appearance, each user's interactions by timestamp (stable sort:
        ties keep the file order).
        ``MicroLens-100k_pairs.tsv``: one user a line, ``user<TAB>item item ...`` (oldest
        first, no timestamps).
    titles: ``MicroLens-100k_title_en.csv``, ``item,title``; a header line is optional. Read
        with a CSV parser, so quoted titles may hold commas, quotes and line breaks; fields
        after the first are joined back with ``,``, so unquoted titles with commas survive.
    covers_dir: folder of cover images ``<item><suffixes.cover>`` -> ``image_path``.
    videos_dir, audio_dir: optional folders ``<item><suffixes.video>`` -> ``video_path`` and
        ``<item><suffixes.audio>`` -> ``audio_path`` (null = that modality is not used).
    suffixes: ``{cover: .jpg, video: .mp4, audio: .wav}``.
Items without a cover, video or audio file keep a null path (counted in ``stats.json:
missing``), they are not dropped. Bad records (``ctx.problem`` reasons): ``malformed_line``,
``empty_title``, ``duplicate_item``, ``unknown_item`` (an interaction with an item that has
no title: not in the titles file, or its line there was skipped), and for the ``.tsv``
layout ``duplicate_user``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from data_prep.readers import (
    ItemCatalogue,
    RawDataError,
    RawDataset,
    RawOptions,
    ReadContext,
    clean_text,
    local_media,
    register_reader,
    require_file,
)
from data_prep.readers.sequences import chronological, read_user_sequences

log = logging.getLogger(__name__)


def _is_int(value: str) -> bool:
    return value.strip().removeprefix("-").isdigit()


def _csv_records(path: Path, integer_field: int) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the record starts, fields) for each non-blank CSV record
    (utf-8, with or without a byte-order mark). The first record is a header, skipped, when
    its field ``integer_field`` (an integer in the data: item id, timestamp) is not one."""
    with open(path, encoding="utf-8-sig", newline="") as lines:
        records = csv.reader(lines)
        end = 0
        try:
            for fields in records:
                start, end = end + 1, records.line_num
                if start == 1 and fields and not _is_int(fields[integer_field]):
                    log.info("%s: reading line 1 as a header: %s", path, fields)
                elif fields:
                    yield start, fields
        except csv.Error as error:
            raise RawDataError(f"{path}:{end + 1}: not valid CSV ({error})") from None


def _read_titles(path: Path, ctx: ReadContext) -> ItemCatalogue:
    catalogue = ItemCatalogue(ctx)
    for line_no, fields in _csv_records(path, integer_field=0):
        key = fields[0].strip()
        if len(fields) < 2 or not key:
            ctx.problem("malformed_line", path, line_no, "expected 'item,title'")
            continue
        catalogue.add(key, clean_text(",".join(fields[1:])), path, line_no)
    return catalogue


def _read_pairs_csv(path: Path, known_items: set[str], ctx: ReadContext) -> pl.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    for line_no, fields in _csv_records(path, integer_field=-1):
        if len(fields) != 3 or not all(f.strip() for f in fields) or not _is_int(fields[2]):
            ctx.problem("malformed_line", path, line_no,
                        "expected 'user,item,timestamp' (integer timestamp)")
            continue
        user, item, timestamp = (f.strip() for f in fields)
        if item not in known_items:
            ctx.problem("unknown_item", path, line_no, f"item {item!r} has no title in the titles file")
            continue
        users.append(user)
        items.append(item)
        times.append(int(timestamp))
    events = pl.DataFrame(
        {"user_key": users, "item_key": items, "timestamp": times},
        schema={"user_key": pl.String, "item_key": pl.String, "timestamp": pl.Int64},
    )
    return chronological(events)


class MediaSuffixes(RawOptions):
    cover: str = ".jpg"
    video: str = ".mp4"
    audio: str = ".wav"


class MicroLensRaw(RawOptions):
    pairs: str
    titles: str
    covers_dir: str | None = None
    videos_dir: str | None = None
    audio_dir: str | None = None
    suffixes: MediaSuffixes = MediaSuffixes()


@register_reader("microlens", MicroLensRaw)
def read_microlens(raw: Mapping, ctx: ReadContext) -> RawDataset:
    """Read MicroLens pairs (``.csv`` with timestamps or ``.tsv`` sequences), English titles and
    the local cover / video / audio files (see module docstring)."""
    pairs_file = require_file(raw["pairs"], "MicroLens interactions (MicroLens-100k_pairs.csv)")
    titles_file = require_file(raw["titles"], "MicroLens titles (MicroLens-100k_title_en.csv)")
    catalogue = _read_titles(titles_file, ctx)
    suffixes = raw["suffixes"]
    media = {
        column: local_media(raw.get(directory), catalogue.keys, suffixes[suffix], kind)
        for column, directory, suffix, kind in (
            ("image_paths", "covers_dir", "cover", "image"),
            ("video_paths", "videos_dir", "video", "video"),
            ("audio_paths", "audio_dir", "audio", "audio"),
        )
    }
    for column, paths in media.items():
        log.info("%d of %d items have a local %s", sum(p is not None for p in paths), len(paths),
                 column.removesuffix("_paths"))
    known = set(catalogue.keys)
    if pairs_file.suffix == ".tsv":
        interactions = read_user_sequences(pairs_file, known, ctx)
    else:
        interactions = _read_pairs_csv(pairs_file, known, ctx)
    return RawDataset(
        items=catalogue.frame(**media), interactions=interactions, dropped=ctx.dropped_counts()
    )
