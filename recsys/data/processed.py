"""ProcessedDataset: the canonical processed form of every dataset, on disk and in memory.

Directory ``<processed_dir>/`` (see docs/architecture.md):
- ``items.parquet``: ``item_id`` int32 (1..N, dense, sorted; 0 = padding), ``key`` str,
  ``title`` str (non-empty), ``image_path`` str nullable (absolute), ``description`` str
  nullable; and the media columns ``video_path``, ``audio_path`` str nullable (absolute paths
  of local files). ``recsys-prep`` always writes the media columns; they are optional on
  load (datasets processed before they existed lack them), and absent means null for every
  item.
- ``users.parquet``: ``user_id`` int32 (0..U-1, dense, sorted), ``key`` str.
- ``interactions.parquet``: ``user_id`` int32, ``item_id`` int32, ``position`` int32
  (0-based, chronological), sorted by (user_id, position); optional ``timestamp`` int64.
- ``stats.json``: ``dataset``, ``users``, ``items``, ``interactions``, ``dropped``
  (reason -> count), ``missing`` (field -> items with null), ``protocol``, ``source``.

Directories are written atomically (``recsys.atomic_io.atomic_path``): into a hidden sibling
staging directory, then swapped in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.atomic_io import atomic_path
from recsys.errors import Refused

ITEMS_SCHEMA = {
    "item_id": pl.Int32,
    "key": pl.String,
    "title": pl.String,
    "image_path": pl.String,
    "description": pl.String,
}
USERS_SCHEMA = {"user_id": pl.Int32, "key": pl.String}
INTERACTIONS_SCHEMA = {"user_id": pl.Int32, "item_id": pl.Int32, "position": pl.Int32}
OPTIONAL_ITEM_COLUMNS = {"video_path": pl.String, "audio_path": pl.String}
OPTIONAL_INTERACTION_COLUMNS = {"timestamp": pl.Int64}
FILES = ("items.parquet", "users.parquet", "interactions.parquet", "stats.json")
FINGERPRINT_COLUMNS = ("item_id", "key", "title", "image_path")


class ProcessedDataError(Refused, ValueError):
    """A processed dataset file is missing or does not follow the canonical schema."""


def _check_schema(frame: pl.DataFrame, schema: dict, path: Path, optional: dict | None = None):
    for column, dtype in schema.items():
        if column not in frame.columns:
            raise ProcessedDataError(f"{path}: missing column {column!r}")
        if frame.schema[column] != dtype:
            raise ProcessedDataError(
                f"{path}: column {column!r} has type {frame.schema[column]}, expected {dtype}"
            )
    for column, dtype in (optional or {}).items():
        if column in frame.columns and frame.schema[column] != dtype:
            raise ProcessedDataError(
                f"{path}: column {column!r} has type {frame.schema[column]}, expected {dtype}"
            )


def _check(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ProcessedDataError(f"{path}: {message}")


@dataclass(frozen=True)
class ProcessedDataset:
    """The three tables and the stats of one processed dataset (schemas: module docstring)."""

    items: pl.DataFrame
    users: pl.DataFrame
    interactions: pl.DataFrame
    stats: dict

    @property
    def num_items(self) -> int:
        """N, the number of real items (ids 1..N)."""
        return self.items.height

    @property
    def num_users(self) -> int:
        """U, the number of users (ids 0..U-1)."""
        return self.users.height

    def validate(self, directory: Path | str = "<memory>") -> None:
        """Check schemas, dense ids, ordering and stats; raise ProcessedDataError naming the
        file and field that is wrong."""
        directory = Path(directory)
        items_path, users_path = directory / "items.parquet", directory / "users.parquet"
        inter_path = directory / "interactions.parquet"
        _check_schema(self.items, ITEMS_SCHEMA, items_path, OPTIONAL_ITEM_COLUMNS)
        _check_schema(self.users, USERS_SCHEMA, users_path)
        _check_schema(self.interactions, INTERACTIONS_SCHEMA, inter_path,
                      OPTIONAL_INTERACTION_COLUMNS)
        n, u = self.num_items, self.num_users
        _check(self.items["item_id"].equals(pl.int_range(1, n + 1, dtype=pl.Int32, eager=True)
                                            .alias("item_id")),
               items_path, "'item_id' must be 1..N, dense and sorted")
        titles = self.items["title"]
        _check(titles.null_count() == 0 and not (titles.str.strip_chars() == "").any(),
               items_path, "'title' must be non-empty")
        for frame, path in ((self.items, items_path), (self.users, users_path)):
            keys = frame["key"]
            _check(keys.null_count() == 0 and keys.n_unique() == frame.height, path,
                   "'key' must be unique and non-null")
        _check(self.users["user_id"].equals(pl.int_range(0, u, dtype=pl.Int32, eager=True)
                                            .alias("user_id")),
               users_path, "'user_id' must be 0..U-1, dense and sorted")
        inter = self.interactions
        if inter.height:
            _check(inter["item_id"].min() >= 1 and inter["item_id"].max() <= n, inter_path,
                   f"'item_id' must lie in 1..{n}")
            _check(inter["user_id"].min() >= 0 and inter["user_id"].max() < u, inter_path,
                   f"'user_id' must lie in 0..{u - 1}")
        expected_position = pl.int_range(pl.len(), dtype=pl.Int32).over("user_id")
        ordered = inter.select(
            (pl.col("user_id").diff().fill_null(0) >= 0).all().alias("users_sorted"),
            (pl.col("position") == expected_position).all().alias("positions_dense"),
        ).row(0)
        _check(all(ordered), inter_path,
               "rows must be sorted by (user_id, position) with 'position' = 0..len-1 per user")
        for field, actual in (("users", u), ("items", n), ("interactions", inter.height)):
            _check(self.stats.get(field) == actual, directory / "stats.json",
                   f"{field!r} is {self.stats.get(field)}, the tables hold {actual}")

    def fingerprint(self) -> str:
        """sha256 hex digest over the items' (item_id, key, title, image_path), plus
        ``video_path`` / ``audio_path`` where any item has one: the identity of the catalogue.
        It covers media paths, not the files' contents; a feature cache is keyed by its own
        inputs fingerprint, which does (recsys/cache/inputs.py). A dataset without video and
        audio keeps the fingerprint it had before those columns existed."""
        columns = {c: self.items[c].to_list() for c in FINGERPRINT_COLUMNS}
        columns.update(  # media columns only where used: old fingerprints (and caches) stay valid
            (c, self.items[c].to_list())
            for c in OPTIONAL_ITEM_COLUMNS
            if c in self.items.columns and self.items[c].null_count() < self.items.height
        )
        payload = json.dumps(columns, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def content_fingerprint(self) -> str:
        """sha256 hex digest over everything a trained model depends on: the item features
        (``fingerprint()``), the user keys and the interaction table (user_id, item_id,
        position). A dataset re-prepared with other data changes it; the same data written
        again does not (it hashes values, not file bytes)."""
        digest = hashlib.sha256(self.fingerprint().encode())
        digest.update(json.dumps(self.users["key"].to_list(), ensure_ascii=False).encode("utf-8"))
        for column in ("user_id", "item_id", "position"):
            digest.update(self.interactions[column].cast(pl.Int64).to_numpy().tobytes())
        return digest.hexdigest()

    def write_into(self, directory: Path | str) -> None:
        """Write the four files into an existing (staging) directory; not atomic by itself."""
        directory = Path(directory)
        self.items.write_parquet(directory / "items.parquet")
        self.users.write_parquet(directory / "users.parquet")
        self.interactions.write_parquet(directory / "interactions.parquet")
        with open(directory / "stats.json", "w", encoding="utf-8") as out:
            json.dump(self.stats, out, indent=2, ensure_ascii=False)
            out.write("\n")

    def save(self, directory: Path | str, overwrite: bool = False) -> Path:
        """Validate, then write atomically to ``directory``; returns its absolute path.
        An existing ``directory`` is replaced only with ``overwrite``."""
        self.validate()
        directory = Path(directory).absolute()
        if directory.exists() and not overwrite:
            raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
        with atomic_path(directory) as staging:
            staging.mkdir()
            self.write_into(staging)
        return directory

    @classmethod
    def load(cls, directory: Path | str, validate: bool = True) -> ProcessedDataset:
        """Read a processed dataset directory (validated unless ``validate=False``)."""
        directory = Path(directory)
        for name in FILES:
            if not (directory / name).is_file():
                raise ProcessedDataError(
                    f"{directory / name} not found; build the dataset with `recsys-prep "
                    f"data=<name>` (see data_prep/README.md)"
                )
        stats = read_stats(directory)
        dataset = cls(
            items=pl.read_parquet(directory / "items.parquet"),
            users=pl.read_parquet(directory / "users.parquet"),
            interactions=pl.read_parquet(directory / "interactions.parquet"),
            stats=stats,
        )
        if validate:
            dataset.validate(directory)
        return dataset


def read_stats(directory: Path | str) -> dict | None:
    """The ``stats.json`` of a processed dataset directory, or None if it has none.

    Raises:
        ProcessedDataError: it is not a JSON object (empty, truncated, ...); the message
            names the file and says how to rebuild it.
    """
    path = Path(directory) / "stats.json"
    if not path.is_file():
        return None
    rebuild = "rebuild it with `recsys-prep data=<name>` (it rebuilds an unreadable one)"
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProcessedDataError(f"{path} is not valid JSON ({err}; truncated?): {rebuild}") from None
    if not isinstance(stats, dict):
        raise ProcessedDataError(f"{path} holds a JSON {type(stats).__name__}, not an object: {rebuild}")
    return stats
