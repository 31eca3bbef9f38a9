"""Interaction layouts shared by several readers.

- ``read_user_sequences``: one user a line, ``user<TAB>item item ...`` (oldest first), as in
  the IISAN ``users.tsv`` and ``MicroLens-100k_pairs.tsv``.
- ``chronological``: event rows (user, item, timestamp) in any order -> users in order of
  first appearance, each user's rows sorted by timestamp with a stable sort.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_prep.readers import ReadContext, text_lines


def read_user_sequences(path: Path, known_items: set[str], ctx: ReadContext) -> pl.DataFrame:
    """Read ``user<TAB>item item ...`` lines (items separated by whitespace, oldest first).

    Lines as in ``text_lines``. Problems (``ctx.problem`` reasons): ``malformed_line`` (no tab,
    no items), ``invalid_utf8``, ``duplicate_user`` (a user on a second line; the line is
    skipped), ``unknown_item`` (an item not in ``known_items``; skipping drops that one
    interaction).

    Returns:
        Frame ``[user_key str, item_key str]``, users in file order, rows chronological.
    """
    user_keys: list[str] = []
    item_keys: list[str] = []
    seen: set[str] = set()
    for line_no, line in text_lines(path, ctx):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].split():
            ctx.problem("malformed_line", path, line_no, "expected 'user<TAB>item item ...'")
            continue
        user = fields[0].strip()
        if user in seen:
            ctx.problem("duplicate_user", path, line_no, f"user {user!r} appears again")
            continue
        seen.add(user)
        for item in fields[1].split():
            if item not in known_items:
                ctx.problem(
                    "unknown_item", path, line_no, f"item {item!r} is not in the items file"
                )
                continue
            user_keys.append(user)
            item_keys.append(item)
    return pl.DataFrame(
        {"user_key": user_keys, "item_key": item_keys},
        schema={"user_key": pl.String, "item_key": pl.String},
    )


def chronological(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` (columns ``user_key``, ``item_key``, ``timestamp``, any row order) with
    users in order of first appearance and each user's rows sorted by ``timestamp``; the
    sort is stable, so equal timestamps keep their order in ``events``."""
    first_row = pl.col("row").min().over("user_key")
    return (
        events.with_row_index("row")
        .sort([first_row, pl.col("timestamp")], maintain_order=True)
        .drop("row")
    )
