"""Reader for MovieLens-100K with TMDB overviews and poster thumbnails.

Raw config (``conf/data/movielens.yaml: raw``):
    ratings_file: ``ml-100k/u.data``, ``user<TAB>item<TAB>rating<TAB>unix_ts``.
    items_file: ``ml-100k/u.item``, latin-1, ``item|title|...``; the title comes from here.
    overviews_file: ``data/items.csv`` (CSV with quoted multi-line fields); ``overview``
        becomes the item description (duplicate ``movie_id`` rows: the first is kept).
    posters_dir: ``data/posters`` holding ``{movie_id}.jpg``; items without one get a null
        ``image_path`` (counted in ``stats.json: missing``).

Sequences: every rating is an interaction, sorted by (user id, timestamp) with a stable
sort, so ties in timestamps keep the order of ``u.data``. Users are ordered by id.
Bad records (``ctx.problem`` reasons): ``malformed_line``, ``empty_title``,
``duplicate_item``, ``unknown_item``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import polars as pl

from data_prep.readers import (
    RawDataError,
    RawDataset,
    RawOptions,
    ReadContext,
    clean_text,
    items_frame,
    local_media,
    register_reader,
    require_file,
)

log = logging.getLogger(__name__)


def _read_titles(path, ctx: ReadContext) -> dict[int, str]:
    titles: dict[int, str] = {}
    with open(path, encoding="latin-1") as lines:
        for line_no, line in enumerate(lines, start=1):
            fields = line.rstrip("\r\n").split("|")
            if len(fields) < 2 or not fields[0].isdigit():
                ctx.problem("malformed_line", path, line_no, "expected 'movie_id|title|...'")
                continue
            movie, title = int(fields[0]), clean_text(fields[1])
            if not title:
                ctx.problem("empty_title", path, line_no, f"movie {movie} has an empty title")
            elif movie in titles:
                ctx.problem("duplicate_item", path, line_no, f"movie {movie} listed twice")
            else:
                titles[movie] = title
    return titles


def _read_ratings(path, known_items: dict[int, str], ctx: ReadContext) -> pl.DataFrame:
    users: list[int] = []
    items: list[int] = []
    timestamps: list[int] = []
    with open(path, encoding="latin-1") as lines:
        for line_no, line in enumerate(lines, start=1):
            fields = line.split()
            if len(fields) != 4 or not all(field.isdigit() for field in fields):
                ctx.problem("malformed_line", path, line_no,
                            "expected 'user<TAB>item<TAB>rating<TAB>timestamp' (integers)")
                continue
            item = int(fields[1])
            if item not in known_items:
                ctx.problem("unknown_item", path, line_no, f"movie {item} is not in u.item")
                continue
            users.append(int(fields[0]))
            items.append(item)
            timestamps.append(int(fields[3]))
    frame = pl.DataFrame(
        {"user_key": users, "item_key": items, "timestamp": timestamps},
        schema={"user_key": pl.Int64, "item_key": pl.Int64, "timestamp": pl.Int64},
    )
    return frame.sort(["user_key", "timestamp"], maintain_order=True)


def _read_overviews(path) -> dict[int, str]:
    try:
        frame = pl.read_csv(path, columns=["movie_id", "overview"], infer_schema_length=0)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise RawDataError(f"{path}: cannot read 'movie_id' and 'overview' ({error})") from None
    frame = frame.unique("movie_id", keep="first", maintain_order=True)
    return {
        int(movie): clean_text(overview)
        for movie, overview in frame.iter_rows()
        if overview is not None and clean_text(overview)
    }


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
    titles = _read_titles(items_file, ctx)
    overviews = _read_overviews(overviews_file)
    keys = list(titles)
    posters = local_media(raw.get("posters_dir"), keys, ".jpg")
    missing = [key for key, poster in zip(keys, posters, strict=True) if poster is None]
    if missing:
        log.info("%d movies have no poster (image_path null): %s", len(missing), missing[:20])
    items = items_frame(
        keys, [titles[k] for k in keys], posters, [overviews.get(k) for k in keys]
    )
    interactions = _read_ratings(ratings_file, titles, ctx)
    return RawDataset(items=items, interactions=interactions, dropped=ctx.dropped_counts())
