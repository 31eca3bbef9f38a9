"""The reader contract: a registry of raw-dataset readers and what they hand to the protocol.

A reader is a function ``read(raw: Mapping, ctx: ReadContext) -> RawDataset`` registered
under a name used by ``conf/data/<name>.yaml: reader``, with the typed model of its raw
options (``data.raw``: checked when the config is composed, before any work)::

    class IISANRaw(RawOptions):
        users_file: str
        items_file: str
        images_dir: str | None = None

    @register_reader("amazon_iisan", IISANRaw)
    def read_amazon_iisan(raw, ctx): ...

    read_raw("amazon_iisan", raw_cfg, ReadContext(on_error="raise"))

Readers are found by discovery (every module of this package and the entry-point group
``recsys.readers``, see ``recsys.registry``); ``raw`` reaches them validated, defaults filled.

Readers report every bad input through ``ctx.problem(...)``: with ``on_error="raise"`` it
raises a ``RawDataError`` naming the file, the line and what to do; with ``"skip"`` it
counts the reason (later written under ``stats.json: dropped``) and logs the first few.

Shared reading rules (``text_lines``, ``csv_records``, ``parse_int64``, ``clean_text``):

- lines are the file's ``\n``-separated lines, so the line numbers in errors are those an
  editor or ``sed -n Np`` shows; the line end (``\n`` or ``\r\n``) is removed and a stray
  CR anywhere else (inside a field) is read as a space;
- a UTF-8 byte-order mark opening a file is dropped (never part of the first key);
- a line that is not valid UTF-8 is a bad record ``invalid_utf8`` (that line alone);
- integer fields (ids, timestamps) are ASCII digits with an optional ``-`` that fit in
  int64; anything else is a ``malformed_line``;
- a title or description that shows nothing (whitespace, zero-width and other format or
  control characters, fillers) counts as empty;
- a file that yields no usable item or no usable interaction is refused (``RawDataError``
  naming it), in either mode: it is an unusable dataset, not a bad record.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import html
import logging
import os
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from recsys.errors import Refused
from recsys.registry import Registry

log = logging.getLogger(__name__)

README_HINT = "see data_prep/README.md for where to get each raw dataset"
_LOGGED_PER_REASON = 5
INT64_RANGE = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"-?[0-9]+")
# Unicode categories that render as nothing: control (Cc), format (Cf: zero-width space and
# joiners, direction marks, BOM, ...), unassigned (Cn) and private use (Co).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co"})
# Invisible characters of other categories: the default-ignorable code points outside Cf
# (combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other
# variation selectors) and the blank Braille pattern.
_INVISIBLE_CHARACTERS = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)


class RawDataError(Refused, ValueError):
    """A raw input file is missing or holds a record the reader cannot use."""


@dataclass(frozen=True)
class RawDataset:
    """What a reader returns; the protocol turns it into the canonical processed dataset.

    Attributes:
        items: the item catalogue, one row per item, unique ``key`` (str or int; may cover
            more items than the interactions use); columns ``key``, ``title`` (str,
            non-empty, HTML-unescaped), ``image_path``, ``video_path``, ``audio_path`` (str,
            nullable, absolute paths of local files), ``description`` (str, nullable).
            Build it with ``items_frame`` (or ``ItemCatalogue.frame``).
        interactions: one row per interaction, columns ``user_key``, ``item_key`` (same
            dtype as ``items.key``) and optionally ``timestamp`` (int64). Rows of one user
            are contiguous and chronological; users appear in source order.
        dropped: reason -> count of records the reader skipped.
    """

    items: pl.DataFrame
    interactions: pl.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class ReadContext:
    """Error policy and output locations handed to a reader.

    Attributes:
        on_error: ``"raise"`` (stop at the first bad record) or ``"skip"`` (count and log).
        staging_dir: where a reader may write generated files (e.g. synthetic images);
            becomes ``final_dir`` when the processed dataset is committed.
        final_dir: the processed dataset directory that paths written to items must use.
        dropped: reason -> count, filled by ``problem``.
    """

    on_error: str = "raise"
    staging_dir: Path | None = None
    final_dir: Path | None = None
    dropped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def problem(self, reason: str, path: Path | str, line: int | None, message: str) -> None:
        """Raise or count one bad record.

        Args:
            reason: short snake_case key counted in ``stats.json: dropped`` (skip mode).
            path: the file holding the record.
            line: 1-based line number in that file (None when not line-based).
            message: what is wrong with the record.
        """
        where = f"{path}:{line}" if line is not None else str(path)
        if self.on_error == "raise":
            raise RawDataError(
                f"{where}: {message}. Fix the file, or set data.on_error=skip to skip such "
                f"records (they are counted in stats.json under 'dropped')."
            )
        self.dropped[reason] += 1
        if self.dropped[reason] <= _LOGGED_PER_REASON:
            log.warning("skipping (%s) %s: %s", reason, where, message)

    def dropped_counts(self) -> dict[str, int]:
        """Reason -> count of the skipped records, logging one summary line per reason."""
        for reason, count in sorted(self.dropped.items()):
            log.warning("skipped %d record(s): %s", count, reason)
        return dict(sorted(self.dropped.items()))


def require_file(path: Path | str, what: str) -> Path:
    """Return ``path`` as a Path, or raise a RawDataError saying where to get the data."""
    path = Path(path)
    if not path.is_file():
        raise RawDataError(f"{what} not found: {path} ({README_HINT})")
    return path


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: it holds only whitespace and invisible characters
    (control, format, unassigned, private-use, fillers, variation selectors)."""
    return all(
        char.isspace()
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
        or _INVISIBLE_CHARACTERS.fullmatch(char)
        for char in text
    )


def clean_text(text: str) -> str:
    """HTML entities unescaped (``&amp;`` -> ``&``), surrounding whitespace stripped; ``""``
    when nothing visible is left (see ``is_blank``)."""
    text = html.unescape(text).strip()
    return "" if is_blank(text) else text


def is_integer(text: str) -> bool:
    """True when ``text`` is ASCII digits with an optional ``-`` (surrounding whitespace
    allowed), of any size."""
    return _INTEGER.fullmatch(text.strip()) is not None


def parse_int64(value: Any) -> int | None:
    """``value`` as an int when it is one (not a bool) or an ``is_integer`` string, and fits
    in int64; None otherwise."""
    if isinstance(value, str):
        value = int(value) if is_integer(value) else None
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if INT64_RANGE[0] <= value <= INT64_RANGE[1] else None


def text_lines(
    path: Path, ctx: ReadContext, encoding: str = "utf-8"
) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for each ``\n``-separated line of a text file, ``.gz``
    decompressed: line end removed, a stray CR read as a space, a leading UTF-8 byte-order
    mark dropped. A line that does not decode (``encoding`` utf-8 or latin-1) is a problem
    ``invalid_utf8``; a file that cannot be read (damaged gzip, I/O error) a RawDataError."""
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rb") as lines:
            for line_no, raw in enumerate(lines, start=1):
                if line_no == 1:
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as error:
                    ctx.problem("invalid_utf8", path, line_no,
                                f"not valid {encoding} (byte {raw[error.start]:#04x}, the "
                                f"{error.start + 1}th of the line); re-save the file as {encoding}")
                    continue
                text = text.removesuffix("\n").removesuffix("\r")
                yield line_no, text.replace("\r", " ")
    except (OSError, EOFError, zlib.error) as error:
        raise RawDataError(
            f"{path}:{line_no + 1}: cannot read the file ({error}); it is damaged or "
            f"truncated, get it again ({README_HINT})"
        ) from None


def csv_records(path: Path, ctx: ReadContext) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the record starts, fields) for each non-blank record of a
    UTF-8 CSV file, its lines read by ``text_lines`` (quoted fields may span lines, and hold
    commas, quotes and line breaks). A record the CSV parser rejects is a ``malformed_line``."""
    consumed: list[int] = []  # line numbers of the record being parsed

    def lines() -> Iterator[str]:
        for line_no, text in text_lines(path, ctx):
            consumed.append(line_no)
            yield text + "\n"

    records = csv.reader(lines())
    while True:
        consumed.clear()
        try:
            fields = next(records)
        except StopIteration:
            return
        except csv.Error as error:
            ctx.problem("malformed_line", path, consumed[0], f"not valid CSV ({error})")
            continue
        if fields:
            yield consumed[0], fields


def items_frame(
    keys: list,
    titles: list[str],
    image_paths: list[str | None] | None = None,
    descriptions: list[str | None] | None = None,
    *,
    video_paths: list[str | None] | None = None,
    audio_paths: list[str | None] | None = None,
) -> pl.DataFrame:
    """Item catalogue frame ``[key, title, image_path, description, video_path, audio_path]``;
    every column but ``key`` and ``title`` is a nullable str, all null where not given."""
    n = len(keys)
    optional = {
        "image_path": image_paths,
        "description": descriptions,
        "video_path": video_paths,
        "audio_path": audio_paths,
    }
    return pl.DataFrame(
        {"key": keys, "title": titles}
        | {name: values if values is not None else [None] * n for name, values in optional.items()},
        schema_overrides={"title": pl.String} | dict.fromkeys(optional, pl.String),
    )


def _nothing_usable(path: Path, what: str, ctx: ReadContext) -> RawDataError:
    """The error for a file that gave no usable record: an unusable dataset in any mode."""
    skipped = f" (records skipped so far: {dict(ctx.dropped)})" if ctx.dropped else ""
    return RawDataError(
        f"{path}: no usable {what}: the file is empty or none of its records could be used"
        f"{skipped}. Check that data.raw names the right file and that it is complete "
        f"({README_HINT})"
    )


class ItemCatalogue:
    """Items (key, title, optional description) collected in file order from the items file
    ``path``; a blank title or a key seen before is a problem reported through the
    ReadContext (raise, or skip + count)."""

    def __init__(self, ctx: ReadContext, path: Path) -> None:
        self.ctx = ctx
        self.path = path
        self.keys: list = []
        self.titles: list[str] = []
        self.descriptions: list[str | None] = []
        self._seen: set = set()

    def add(self, key: str | int, title: str, line: int, description: str | None = None) -> None:
        """Add one item read from ``line`` of the items file (``title`` cleaned already)."""
        if is_blank(title):
            self.ctx.problem("empty_title", self.path, line, f"item {key!r} has an empty title")
        elif key in self._seen:
            self.ctx.problem("duplicate_item", self.path, line, f"item {key!r} listed twice")
        else:
            self._seen.add(key)
            self.keys.append(key)
            self.titles.append(title)
            self.descriptions.append(description)

    def frame(
        self,
        image_paths: list[str | None] | None = None,
        *,
        video_paths: list[str | None] | None = None,
        audio_paths: list[str | None] | None = None,
    ) -> pl.DataFrame:
        """The catalogue as ``items_frame`` (media paths aligned with ``keys``); a RawDataError
        naming the items file when it gave no item."""
        if not self.keys:
            raise _nothing_usable(self.path, "items", self.ctx)
        return items_frame(self.keys, self.titles, image_paths, self.descriptions,
                           video_paths=video_paths, audio_paths=audio_paths)


def raw_dataset(
    items: pl.DataFrame, interactions: pl.DataFrame, interactions_file: Path, ctx: ReadContext
) -> RawDataset:
    """The reader's result, with the counts of ``ctx``; a RawDataError naming
    ``interactions_file`` when it gave no interaction."""
    if interactions.height == 0:
        raise _nothing_usable(interactions_file, "interactions", ctx)
    return RawDataset(items=items, interactions=interactions, dropped=ctx.dropped_counts())


def local_media(
    directory: Path | str | None, keys: list, suffix: str, kind: str = "image"
) -> list[str | None]:
    """Absolute path of ``<directory>/<key><suffix>`` for each key, None where no such file
    exists (or ``directory`` is None). Lists the directory once; ``kind`` (image, video,
    audio) names it in the error raised when it does not exist."""
    if directory is None:
        return [None] * len(keys)
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise RawDataError(f"{kind} directory not found: {directory} ({README_HINT})")
    present = {entry.name for entry in os.scandir(directory) if entry.is_file()}
    return [
        str(directory / f"{key}{suffix}") if f"{key}{suffix}" in present else None
        for key in keys
    ]


class RawOptions(BaseModel):
    """Base of the typed raw options of a reader (``data.raw``): strict, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Reader = Callable[[Mapping, ReadContext], RawDataset]
READERS: Registry[Reader] = Registry("reader", package=__name__, group="recsys.readers")


def register_reader(name: str, options: type[RawOptions]) -> Callable[[Reader], Reader]:
    """Decorator registering ``read(raw, ctx) -> RawDataset`` under ``name``, with the model
    of its raw options (``read.options``)."""

    def decorate(reader: Reader) -> Reader:
        reader.options = options
        return READERS.register(name)(reader)

    return decorate


def get_reader(name: str) -> Reader:
    """The reader registered under ``name``; ``reader.options`` is its raw-options model."""
    return READERS.get(name)


def list_readers() -> list[str]:
    """Names of all registered readers, sorted."""
    return READERS.names()


def read_raw(name: str, raw: Mapping[str, Any], ctx: ReadContext) -> RawDataset:
    """Run reader ``name`` on ``raw`` validated by its options model (defaults filled)."""
    reader = get_reader(name)
    return reader(reader.options.model_validate(dict(raw)).model_dump(), ctx)
