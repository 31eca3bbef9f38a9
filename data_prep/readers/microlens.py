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
missing``), they are not dropped. Lines as in ``data_prep.readers.text_lines``; timestamps
must fit in int64. Bad records (``ctx.problem`` reasons): ``malformed_line``,
``invalid_utf8``, ``empty_title``, ``duplicate_item``, ``unknown_item`` (an interaction with
an item that has no title: not in the titles file, or its line there was skipped), and for
the ``.tsv`` layout ``duplicate_user``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from data_prep.readers import (
    ItemCatalogue,
    RawDataset,
    RawOptions,
    ReadContext,
    clean_text,
    csv_records,
    is_integer,
    local_media,
    parse_int64,
    raw_dataset,
    register_reader,
    require_file,
)
from data_prep.readers.sequences import chronological, read_user_sequences

log = logging.getLogger(__name__)


def _records(path: Path, integer_field: int, ctx: ReadContext) -> Iterator[tuple[int, list[str]]]:
    """``csv_records`` of ``path``; the first record is a header, skipped, when its field
    ``integer_field`` (an integer in the data: item id, timestamp) is not one."""
    for index, (line_no, fields) in enumerate(csv_records(path, ctx)):
        if index == 0 and not is_integer(fields[integer_field]):
            log.info("%s: reading line %d as a header: %s", path, line_no, fields)
        else:
            yield line_no, fields


def _read_titles(path: Path, ctx: ReadContext) -> ItemCatalogue:
    catalogue = ItemCatalogue(ctx, path)
    for line_no, fields in _records(path, 0, ctx):
        key = fields[0].strip()
        if len(fields) < 2 or not key:
            ctx.problem("malformed_line", path, line_no, "expected 'item,title'")
            continue
        catalogue.add(key, clean_text(",".join(fields[1:])), line_no)
    return catalogue


def _read_pairs_csv(path: Path, known_items: set[str], ctx: ReadContext) -> pl.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    for line_no, fields in _records(path, -1, ctx):
        timestamp = parse_int64(fields[-1])
        if len(fields) != 3 or not all(f.strip() for f in fields) or timestamp is None:
            ctx.problem("malformed_line", path, line_no,
                        "expected 'user,item,timestamp' (integer timestamp, int64)")
            continue
        user, item = fields[0].strip(), fields[1].strip()
        if item not in known_items:
            ctx.problem("unknown_item", path, line_no, f"item {item!r} has no title in the titles file")
            continue
        users.append(user)
        items.append(item)
        times.append(timestamp)
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
    items = catalogue.frame(**media)
    known = set(catalogue.keys)
    if pairs_file.suffix == ".tsv":
        interactions = read_user_sequences(pairs_file, known, ctx)
    else:
        interactions = _read_pairs_csv(pairs_file, known, ctx)
    return raw_dataset(items, interactions, pairs_file, ctx)
