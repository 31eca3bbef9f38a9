"""Reader for the IISAN Amazon TSV files (Scientific, Instrument), with optional local images.

Raw config (``conf/data/scientific.yaml: raw``):
    users_file: one user a line, ``user_id<TAB>ASIN ASIN ...`` (space separated, oldest first).
    items_file: one item a line, ``ASIN<TAB>title`` (titles hold HTML entities).
    images_dir: optional folder of item images ``<ASIN>.jpg`` (IISAN distributes them as a
        separate archive); items without a file get a null ``image_path`` (counted in
        stats.json ``missing``). null = text only.

Bad records (``ctx.problem`` reasons): ``malformed_line`` (no tab / no items / no title
column), ``invalid_utf8``, ``empty_title``, ``duplicate_item``, ``duplicate_user``,
``unknown_item`` (an ASIN in a sequence that the items file lacks; skipping drops that one
interaction). Lines, BOM and stray CRs as in ``text_lines``; an items or users file without
a usable line is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from data_prep.readers import (
    ItemCatalogue,
    RawDataset,
    RawOptions,
    ReadContext,
    clean_text,
    local_media,
    raw_dataset,
    register_reader,
    require_file,
    text_lines,
)
from data_prep.readers.sequences import read_user_sequences


def _read_items(path: Path, images_dir, ctx: ReadContext) -> pl.DataFrame:
    catalogue = ItemCatalogue(ctx, path)
    for line_no, line in text_lines(path, ctx):
        fields = line.split("\t", 1)
        if len(fields) != 2 or not fields[0].strip():
            ctx.problem("malformed_line", path, line_no, "expected 'ASIN<TAB>title'")
            continue
        catalogue.add(fields[0].strip(), clean_text(fields[1]), line_no)
    return catalogue.frame(local_media(images_dir, catalogue.keys, ".jpg"))


class AmazonIISANRaw(RawOptions):
    users_file: str
    items_file: str
    images_dir: str | None = None


@register_reader("amazon_iisan", AmazonIISANRaw)
def read_amazon_iisan(raw: Mapping, ctx: ReadContext) -> RawDataset:
    """Read ``raw.users_file``, ``raw.items_file`` and the optional ``raw.images_dir`` into a
    RawDataset (no timestamps)."""
    users_file = require_file(raw["users_file"], "IISAN users file")
    items_file = require_file(raw["items_file"], "IISAN items file")
    items = _read_items(items_file, raw.get("images_dir"), ctx)
    interactions = read_user_sequences(users_file, set(items["key"].to_list()), ctx)
    return raw_dataset(items, interactions, users_file, ctx)
