"""The faithful IISAN data protocol: RawDataset -> ProcessedDataset.

1. Users with fewer than ``min_interactions`` interactions are dropped (counted).
2. Each remaining sequence is cut to its last ``keep_last`` interactions (None = keep all).
3. Surviving items are re-indexed 1..N in order of first appearance (users in source
   order, then sequence position); users are numbered 0..U-1 in source order.

Leave-one-out needs at least 3 interactions per user, so ``min_interactions`` >= 3 and
``keep_last`` >= 3. On the IISAN files (5, 13) gives Scientific 12,076 users / 20,314 items /
81,711 interactions and Instrument 10,000 / 19,246 / 75,022.

A protocol that leaves no user (the raw data has no items or no interactions, or every user
has fewer than ``min_interactions``) is refused with a ``RawDataError`` naming the dataset
and its raw files, saying how many users and interactions were dropped and why, and what
to do: a dataset without users would train to NaN.
"""

from __future__ import annotations

import logging

import polars as pl

from data_prep.readers import RawDataError, RawDataset
from recsys.data.processed import ITEMS_SCHEMA, OPTIONAL_ITEM_COLUMNS, ProcessedDataset

log = logging.getLogger(__name__)

MIN_SEQUENCE_LENGTH = 3  # one train item, one validation target, one test target


def _check_raw(raw: RawDataset) -> None:
    """The reader contract the protocol relies on: unique item keys, contiguous users,
    every interaction's item in the catalogue."""
    if raw.items["key"].n_unique() != raw.items.height:
        raise ValueError("reader bug: RawDataset.items has duplicate keys")
    user_runs = raw.interactions.select(
        (pl.col("user_key") != pl.col("user_key").shift()).fill_null(True).sum()
    ).item()
    if user_runs != raw.interactions["user_key"].n_unique():
        raise ValueError("reader bug: interactions of a user are not contiguous")
    unknown = raw.interactions.join(
        raw.items.select(item_key="key"), on="item_key", how="anti"
    )
    if unknown.height:
        raise ValueError(
            f"reader bug: {unknown.height} interactions name items missing from the catalogue, "
            f"e.g. {unknown['item_key'][0]!r}"
        )


def _no_users_left(
    raw: RawDataset, min_interactions: int, dataset: str, source: dict
) -> RawDataError:
    """The error for a protocol that keeps no user: what the reader gave, what was dropped
    and why, and what to do."""
    files = [entry["path"] for entry in source.get("files", {}).values()]
    read_from = f" (read from {', '.join(files)})" if files else ""
    skipped = f"; the reader skipped {raw.dropped}" if raw.dropped else ""
    check_files = "check that data.raw names the right files and that they are complete"
    if raw.items.height == 0 or raw.interactions.height == 0:
        found = "the item catalogue is empty" if raw.items.height == 0 else "it has no interactions"
        advice = check_files.capitalize()
    else:
        longest = raw.interactions.group_by("user_key").len()["len"].max()
        found = (
            f"all {raw.interactions['user_key'].n_unique()} users "
            f"({raw.interactions.height} interactions) have fewer than min_interactions="
            f"{min_interactions} interactions (the longest has {longest})"
        )
        advice = f"Lower data.protocol.min_interactions (>= {MIN_SEQUENCE_LENGTH}), or {check_files}"
    return RawDataError(
        f"dataset {dataset!r}{read_from}: no users left after the protocol: {found}{skipped}. "
        f"{advice}"
    )


def apply_protocol(
    raw: RawDataset,
    *,
    min_interactions: int = 5,
    keep_last: int | None = 13,
    dataset: str,
    source: dict | None = None,
) -> ProcessedDataset:
    """Filter, truncate and re-index a RawDataset.

    Args:
        raw: the reader's output (items catalogue + chronological interactions).
        min_interactions: users with fewer interactions are dropped.
        keep_last: keep each user's last ``keep_last`` interactions; None keeps all.
        dataset: the dataset name written to ``stats.json``.
        source: what the data was built from (written to ``stats.json: source``).

    Raises:
        RawDataError: no user is left (see the module docstring).

    Returns:
        ProcessedDataset with ``stats.dropped`` = the reader's skipped records plus
        ``users_below_min_interactions``, ``interactions_of_dropped_users``,
        ``interactions_beyond_keep_last`` and ``items_without_interactions``.
    """
    if min_interactions < MIN_SEQUENCE_LENGTH:
        raise ValueError(f"min_interactions must be >= {MIN_SEQUENCE_LENGTH} (leave-one-out)")
    if keep_last is not None and keep_last < MIN_SEQUENCE_LENGTH:
        raise ValueError(f"keep_last must be None or >= {MIN_SEQUENCE_LENGTH} (leave-one-out)")
    if raw.items.height == 0 or raw.interactions.height == 0:
        raise _no_users_left(raw, min_interactions, dataset, source or {})
    _check_raw(raw)

    length = pl.len().over("user_key").cast(pl.Int64)  # u32 would wrap in length - keep_last
    long_enough = raw.interactions.filter(length >= min_interactions)
    kept = long_enough
    if keep_last is not None:
        rank_in_user = pl.int_range(pl.len()).over("user_key")
        kept = long_enough.filter(rank_in_user >= length - keep_last)
    if kept.height == 0:
        raise _no_users_left(raw, min_interactions, dataset, source or {})

    users = (
        kept.select(key=pl.col("user_key")).unique(maintain_order=True)
        .with_row_index("user_id").with_columns(pl.col("user_id").cast(pl.Int32))
    )
    item_ids = (
        kept.select(key=pl.col("item_key")).unique(maintain_order=True)
        .with_row_index("item_id", offset=1).with_columns(pl.col("item_id").cast(pl.Int32))
    )
    interactions = (
        kept.join(users.rename({"key": "user_key"}), on="user_key", maintain_order="left")
        .join(item_ids.rename({"key": "item_key"}), on="item_key", maintain_order="left")
        .with_columns(position=pl.int_range(pl.len(), dtype=pl.Int32).over("user_id"))
    )
    columns = ["user_id", "item_id", "position"]
    if "timestamp" in interactions.columns:
        interactions = interactions.with_columns(pl.col("timestamp").cast(pl.Int64))
        columns.append("timestamp")
    item_schema = ITEMS_SCHEMA | OPTIONAL_ITEM_COLUMNS
    items = item_ids.join(raw.items, on="key", maintain_order="left").with_columns(
        pl.col("key").cast(pl.String)
    ).select(list(item_schema)).cast(item_schema)
    users = users.with_columns(pl.col("key").cast(pl.String)).select("user_id", "key")

    n_raw_users = raw.interactions["user_key"].n_unique()
    dropped = dict(raw.dropped)
    dropped.update(
        users_below_min_interactions=n_raw_users - users.height,
        interactions_of_dropped_users=raw.interactions.height - long_enough.height,
        interactions_beyond_keep_last=long_enough.height - kept.height,
        items_without_interactions=raw.items.height - items.height,
    )
    stats = {
        "dataset": dataset,
        "users": users.height,
        "items": items.height,
        "interactions": interactions.height,
        "dropped": dropped,
        "missing": {
            column: items[column].null_count()
            for column in ("image_path", "video_path", "audio_path", "description")
        },
        "protocol": {"min_interactions": min_interactions, "keep_last": keep_last},
        "source": source or {},
    }
    log.info(
        "%s: %d users, %d items, %d interactions; dropped %s",
        dataset, users.height, items.height, interactions.height, dropped,
    )
    return ProcessedDataset(
        items=items, users=users, interactions=interactions.select(columns), stats=stats
    )
