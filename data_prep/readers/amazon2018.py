"""Reader for the raw Amazon Review Data (2018) of Ni, Li and McAuley, one category.

Raw config (``conf/data/amazon2018.yaml: raw``):
    category: the category's file stem, e.g. ``Industrial_and_Scientific``.
    reviews_file: ``<Category>.json.gz`` (or 5-core ``<Category>_5.json.gz``), JSON lines
        with at least ``reviewerID``, ``asin``, ``unixReviewTime``.
    meta_file: ``meta_<Category>.json.gz``, JSON lines with ``asin``, ``title`` and
        optionally ``description`` (list of str), ``imageURL``/``imageURLHighRes`` (lists).
    image_dir: optional folder of downloaded images ``<asin>.jpg``; items without a local
        file get a null ``image_path`` (URLs are never fetched here).

Sequences: users in order of first appearance in the reviews file, each sorted by
``unixReviewTime`` with a stable sort (ties keep file order). Plain-text (uncompressed)
files are read as well, lines as in ``data_prep.readers.text_lines``. Bad records
(``ctx.problem`` reasons): ``malformed_line`` (not a JSON object / missing field /
``unixReviewTime`` not an int64 integer), ``invalid_utf8``, ``empty_title``,
``duplicate_item`` (the 2018 metadata repeats some products), ``unknown_item`` (review of a
product without metadata).
"""

from __future__ import annotations

import json
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
    local_media,
    parse_int64,
    raw_dataset,
    register_reader,
    require_file,
    text_lines,
)
from data_prep.readers.sequences import chronological

log = logging.getLogger(__name__)


def _json_records(path: Path, fields: tuple[str, ...], ctx: ReadContext) -> Iterator[tuple]:
    """Yield (line_no, record) for each JSON line holding all ``fields``; problems otherwise."""
    for line_no, line in text_lines(path, ctx):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            ctx.problem("malformed_line", path, line_no, f"invalid JSON ({error.msg})")
            continue
        if not isinstance(record, dict) or any(f not in record for f in fields):
            ctx.problem("malformed_line", path, line_no,
                        f"expected a JSON object with fields {list(fields)}")
            continue
        yield line_no, record


def _text(value) -> str:
    """A metadata field (str or list of str) as one clean string."""
    if isinstance(value, list):
        value = " ".join(str(part) for part in value)
    return clean_text(str(value)) if value is not None else ""


def _read_meta(path: Path, ctx: ReadContext) -> ItemCatalogue:
    catalogue = ItemCatalogue(ctx, path)
    for line_no, record in _json_records(path, ("asin", "title"), ctx):
        description = _text(record.get("description")) or None
        catalogue.add(str(record["asin"]), _text(record["title"]), line_no, description)
    return catalogue


def _read_reviews(path: Path, known_items: set[str], ctx: ReadContext) -> pl.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    fields = ("reviewerID", "asin", "unixReviewTime")
    for line_no, record in _json_records(path, fields, ctx):
        asin = str(record["asin"])
        if asin not in known_items:
            ctx.problem("unknown_item", path, line_no, f"product {asin!r} has no metadata")
            continue
        time = parse_int64(record["unixReviewTime"])
        if time is None:
            ctx.problem("malformed_line", path, line_no,
                        "'unixReviewTime' is not an integer (int64)")
            continue
        times.append(time)
        users.append(str(record["reviewerID"]))
        items.append(asin)
    frame = pl.DataFrame(
        {"user_key": users, "item_key": items, "timestamp": times},
        schema={"user_key": pl.String, "item_key": pl.String, "timestamp": pl.Int64},
    )
    return chronological(frame)


class Amazon2018Raw(RawOptions):
    category: str  # names the files (conf/data/amazon2018.yaml) and the dataset
    reviews_file: str
    meta_file: str
    image_dir: str | None = None


@register_reader("amazon2018", Amazon2018Raw)
def read_amazon2018(raw: Mapping, ctx: ReadContext) -> RawDataset:
    """Read one Amazon 2018 category (reviews + metadata + optional local images)."""
    reviews_file = require_file(raw["reviews_file"], "Amazon 2018 reviews file")
    meta_file = require_file(raw["meta_file"], "Amazon 2018 metadata file")
    catalogue = _read_meta(meta_file, ctx)
    images = local_media(raw.get("image_dir"), catalogue.keys, ".jpg")
    log.info("%d of %d products have a local image", sum(p is not None for p in images), len(images))
    items = catalogue.frame(images)
    interactions = _read_reviews(reviews_file, set(catalogue.keys), ctx)
    return raw_dataset(items, interactions, reviews_file, ctx)
