"""Reader for MovieLens-100K with TMDB overviews and poster thumbnails.

Raw config (``conf/data/movielens.yaml: raw``):
    ratings_file: ``ml-100k/u.data``, ``user<TAB>item<TAB>rating<TAB>unix_ts``.
    items_file: ``ml-100k/u.item``, latin-1, ``item|title|...``; the title comes from here.
    overviews_file: ``data/items.csv`` (UTF-8 CSV with a header and quoted multi-line
        fields); ``overview`` becomes the item description (duplicate ``movie_id`` rows: the
        first is kept).
    posters_dir: ``data/posters`` holding ``{movie_id}.jpg``; items without one get a null
        ``image_path`` (counted in ``stats.json: missing``).

Sequences: every rating is an interaction, sorted by (user id, timestamp) with a stable
sort, so ties in timestamps keep the order of ``u.data``. Users are ordered by id.
Ids, ratings and timestamps must be integers that fit in int64. Bad records
(``ctx.problem`` reasons): ``malformed_line``, ``invalid_utf8`` (overviews), ``empty_title``,
``duplicate_item``, ``unknown_item``. Lines as in ``data_prep.readers.text_lines``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from data_prep.readers import (
    ItemCatalogue,
    RawDataError,
    RawDataset,
    RawOptions,
    ReadContext,
    clean_text,
    csv_records,
    local_media,
    parse_int64,
    raw_dataset,
    register_reader,
    require_file,
    text_lines,
)

log = logging.getLogger(__name__)
OVERVIEW_COLUMNS = ("movie_id", "overview")


def _read_titles(path: Path, overviews: dict[int, str], ctx: ReadContext) -> ItemCatalogue:
    """u.item titles, each movie described by its overview (if any)."""
    catalogue = ItemCatalogue(ctx, path)
    for line_no, line in text_lines(path, ctx, encoding="latin-1"):
        fields = line.split("|")
        movie = parse_int64(fields[0])
        if len(fields) < 2 or movie is None:
            ctx.problem("malformed_line", path, line_no,
                        "expected 'movie_id|title|...' with an integer movie_id")
            continue
        catalogue.add(movie, clean_text(fields[1]), line_no, overviews.get(movie))
    return catalogue


def _read_ratings(path: Path, known_items: set[int], ctx: ReadContext) -> pl.DataFrame:
    users: list[int] = []
    items: list[int] = []
    timestamps: list[int] = []
    for line_no, line in text_lines(path, ctx, encoding="latin-1"):
        values = [parse_int64(field) for field in line.split()]
        if len(values) != 4 or None in values:
            ctx.problem("malformed_line", path, line_no,
                        "expected 'user<TAB>item<TAB>rating<TAB>timestamp' (integers)")
            continue
        user, item, _rating, timestamp = values
        if item not in known_items:
            ctx.problem("unknown_item", path, line_no, f"movie {item} is not in u.item")
            continue
        users.append(user)
        items.append(item)
        timestamps.append(timestamp)
    frame = pl.DataFrame(
        {"user_key": users, "item_key": items, "timestamp": timestamps},
        schema={"user_key": pl.Int64, "item_key": pl.Int64, "timestamp": pl.Int64},
    )
    return frame.sort(["user_key", "timestamp"], maintain_order=True)


def _read_overviews(path: Path, ctx: ReadContext) -> dict[int, str]:
    """movie_id -> overview (non-blank), from the first row of each movie_id."""
    records = csv_records(path, ctx)
    _, header = next(records, (1, []))
    if not set(OVERVIEW_COLUMNS) <= set(header):
        raise RawDataError(f"{path}:1: expected a header naming the columns "
                           f"{list(OVERVIEW_COLUMNS)}, got {header}")
    id_column, text_column = (header.index(name) for name in OVERVIEW_COLUMNS)
    first_rows: dict[int, str] = {}
    for line_no, fields in records:
        movie = parse_int64(fields[id_column]) if len(fields) == len(header) else None
        if movie is None:
            ctx.problem("malformed_line", path, line_no,
                        f"expected {len(header)} fields with an integer movie_id")
            continue
        first_rows.setdefault(movie, clean_text(fields[text_column]))
    return {movie: overview for movie, overview in first_rows.items() if overview}


class MovieLensRaw(RawOptions):
    ratings_file: str
    items_file: str
    overviews_file: str
    posters_dir: str | None = None


@register_reader("movielens", MovieLensRaw)
def read_movielens(raw: Mapping, ctx: ReadContext) -> RawDataset:
    """Read MovieLens-100K ratings, u.item titles, TMDB overviews and poster paths."""
    ratings_file = require_file(raw["ratings_file"], "MovieLens ratings (u.data)")
    items_file = require_file(raw["items_file"], "MovieLens items (u.item)")
    overviews_file = require_file(raw["overviews_file"], "TMDB overviews (data/items.csv)")
    catalogue = _read_titles(items_file, _read_overviews(overviews_file, ctx), ctx)
    posters = local_media(raw.get("posters_dir"), catalogue.keys, ".jpg")
    missing = [key for key, poster in zip(catalogue.keys, posters, strict=True) if poster is None]
    if missing:
        log.info("%d movies have no poster (image_path null): %s", len(missing), missing[:20])
    items = catalogue.frame(posters)
    interactions = _read_ratings(ratings_file, set(catalogue.keys), ctx)
    return raw_dataset(items, interactions, ratings_file, ctx)
