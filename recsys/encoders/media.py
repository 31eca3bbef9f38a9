"""Reading item media files for the image, audio and video encoders.

- ``read_records(records, field, load, on_error, what)``: the per-item loop every media
  encoder shares. ``record[field]`` null -> missing (``valid=False``, counted in
  ``missing``); a file ``load`` cannot read raises an OSError naming it, or with
  ``on_error="skip"`` is treated like a missing one and counted in ``failed``. A record
  without the field at all (a dataset without that medium) raises a KeyError saying so.
- ``load_rgb_image(path)``: an image file of any Pillow mode -> an 8-bit RGB image (see
  ``to_rgb``: transparency composited over white, 16-bit / 32-bit / float pixels scaled to
  8 bits by their range, never clipped); an image over Pillow's decompression-bomb limit
  is a ValueError giving its size, so ``read_records`` counts it as unreadable.
- ``load_audio(path, sampling_rate, max_seconds)``: any soundfile format (WAV, FLAC, OGG,
  ...) -> mono float32 [S] at ``sampling_rate`` (channels averaged, band-limited resampling,
  cropped to ``max_seconds``).
- ``sample_frame_indices(total, num)`` and ``load_video_frames(path, num, resolution)``: a
  video file (anything PyAV / FFmpeg decodes: mp4, webm, avi, mkv, ...), a directory of
  frame images (sorted .jpg / .jpeg / .png) or a ``.npy`` uint8 array [T, H, W, 3] -> ``num``
  frames sampled uniformly over the clip, each resized to R x R (no crop), uint8
  [num, 3, R, R].

Example:
    >>> sample_frame_indices(16, 4)
    [2, 6, 10, 14]
    >>> load_audio("/x/1.wav", 16_000, max_seconds=10.0).shape     # a 3 s stereo 44.1 kHz file
    torch.Size([48000])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import av
import numpy as np
import soundfile
import soxr
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF  # noqa: N812

T = TypeVar("T")

ON_ERROR = ("raise", "skip")
RESAMPLER = "HQ"  # soxr's quality preset: band-limited, anti-aliased (libsoxr "high quality")
READ_ERRORS = (OSError, ValueError, RuntimeError)  # what a loader raises for an unreadable file
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits a pixel, one band
SIXTEEN_BIT_MAX = 65535.0
# The value ranges tried, in order, for 32-bit integer (I) and float (F) pixels, which carry
# no nominal range: the first that holds every value is taken as black..white; [0, 1] only
# for float. Values outside all of them use the image's own min..max.
NOMINAL_RANGES = ((0.0, 1.0), (0.0, 255.0), (0.0, SIXTEEN_BIT_MAX))
BACKGROUND = (255, 255, 255)  # what transparent pixels show: white, like a page or a shop
RGB_CONVERSION = {  # what to_rgb does, for the manifests of the encoders that use it
    "mode": "RGB",
    "alpha": "over white",
    "wide_pixels": "I;16 by 0..65535; I, F by the first of [0,1] (F), [0,255], [0,65535] "
                   "holding all values, else min..max",
}


@dataclass
class MediaBatch(Generic[T]):
    """What ``read_records`` read: ``items[i]`` (None when missing or skipped), ``valid`` [B]
    bool, and the ``missing`` / ``failed`` counts."""

    items: list[T | None]
    valid: torch.Tensor
    missing: int
    failed: int


def read_records(
    records: list[dict[str, Any]], field: str, load: Callable[[str], T], on_error: str, what: str
) -> MediaBatch[T]:
    """``load(record[field])`` for every record; see the module docstring for missing and
    unreadable files (``what`` names the medium in errors: ``image``, ``audio``, ``video``)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error {on_error!r} not in {ON_ERROR}")
    items: list[T | None] = [None] * len(records)
    valid = torch.zeros(len(records), dtype=torch.bool)
    missing = failed = 0
    for i, record in enumerate(records):
        if field not in record:
            raise KeyError(
                f"item records have no {field!r} field, which the {what} encoder reads: add it "
                f"to the processed items (null where an item has no {what}) or set encoder/{what}=none"
            )
        path = record[field]
        if path is None:
            missing += 1
            continue
        try:
            items[i] = load(str(path))
        except READ_ERRORS as err:
            if on_error == "raise":
                raise OSError(
                    f"cannot read {what} {str(path)!r}: {err} (set on_error=skip to use a zero feature)"
                ) from err
            failed += 1
            continue
        valid[i] = True
    return MediaBatch(items, valid, missing, failed)


def _value_range(mode: str, values: np.ndarray) -> tuple[float, float]:
    """The pixel values shown as black and white (see ``NOMINAL_RANGES``)."""
    if mode.startswith("I;16"):
        return 0.0, SIXTEEN_BIT_MAX
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    for nominal_low, nominal_high in NOMINAL_RANGES[0 if mode == "F" else 1 :]:
        if nominal_low <= low and high <= nominal_high:
            return nominal_low, nominal_high
    return (low, high) if high > low else (low, low + 1.0)


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image -> RGB, scaled by ``_value_range``
    (NaN -> black); pixels equal to a ``transparency`` value show the background."""
    values = np.asarray(img, dtype=np.float64)
    low, high = _value_range(img.mode, values)
    scaled = np.nan_to_num((values - low) * (255.0 / (high - low)), nan=0.0)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    transparent = img.info.get("transparency")
    if isinstance(transparent, int | float):
        rgb[values == transparent] = BACKGROUND
    return Image.fromarray(rgb, "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """An image of any Pillow mode -> mode RGB, 8 bits a channel, as ``RGB_CONVERSION``
    says: ``WIDE_MODES`` scaled by their range; an alpha band, a transparent palette entry
    or colour composited over ``BACKGROUND``; the rest (1, L, P, CMYK, YCbCr, ...) by
    Pillow's conversion. A mode Pillow cannot convert raises ValueError."""
    if img.mode in WIDE_MODES:
        return _wide_to_rgb(img)
    if img.has_transparency_data:
        background = Image.new("RGBA", img.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def load_rgb_image(path: str | Path) -> Image.Image:
    """An image file -> ``to_rgb`` of it (loaded, the file closed). Raises ValueError for an
    image over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), OSError
    for a file Pillow cannot read."""
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"over Pillow's decompression-bomb limit ({err}); shrink the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from err


def load_audio(path: str, sampling_rate: int, max_seconds: float | None) -> torch.Tensor:
    """An audio file -> mono float32 [S] at ``sampling_rate`` Hz, S <= max_seconds * rate
    (only the needed start of a long file is read). Raises ValueError for an empty file."""
    with soundfile.SoundFile(path) as file:
        rate = file.samplerate
        frames = file.frames if max_seconds is None else min(file.frames, math.ceil(max_seconds * rate))
        data = file.read(frames, dtype="float32", always_2d=True)  # [S, C]
    if data.shape[0] == 0:
        raise ValueError("the file holds no audio samples")
    wave = soxr.resample(data.mean(axis=1), rate, sampling_rate, quality=RESAMPLER)
    wave = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return wave if max_seconds is None else wave[: round(max_seconds * sampling_rate)]


def sample_frame_indices(total: int, num: int) -> list[int]:
    """``num`` frame indices spread uniformly over ``total`` frames: the centre of each of
    ``num`` equal segments, floor((k + 1/2) * total / num); a clip shorter than ``num`` frames
    repeats frames (each index appears in order)."""
    if total < 1:
        raise ValueError("the video has no frames")
    return [(2 * k + 1) * total // (2 * num) for k in range(num)]


def _frame_dir(path: Path, num: int) -> tuple[list[torch.Tensor], list[int]]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise ValueError(f"no {'/'.join(FRAME_SUFFIXES)} frame images in the directory")
    indices = sample_frame_indices(len(files), num)
    loaded = {}
    for i in dict.fromkeys(indices):
        loaded[i] = TF.pil_to_tensor(load_rgb_image(files[i]))
    return [loaded[i] for i in indices], indices


def _frame_array(path: Path, num: int) -> tuple[list[torch.Tensor], list[int]]:
    array = np.load(path, mmap_mode="r")
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected a uint8 array [T, H, W, 3], got {array.dtype} {list(array.shape)}")
    indices = sample_frame_indices(array.shape[0], num)
    frames = torch.from_numpy(np.ascontiguousarray(array[indices])).permute(0, 3, 1, 2)
    return list(frames), indices


def _count_frames(path: Path) -> int:
    """Frames of the first video stream: the container's count, else its packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decoded(path: Path, num: int) -> tuple[list[torch.Tensor], list[int]]:
    """Decode up to the last wanted frame, keeping the wanted ones. A decoder yielding fewer
    frames than the container announced maps the indices past its end to its last frame."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            indices = sample_frame_indices(_count_frames(path), num)
            wanted, kept, last = set(indices), {}, None
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                last = i, frame
                if i in wanted:
                    kept[i] = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                if i >= indices[-1]:
                    break
    except av.FFmpegError as err:  # not always an OSError / ValueError
        raise OSError(str(err)) from err
    if last is None:
        raise ValueError("no decodable video frames")
    end, final = last
    if end < indices[-1]:
        kept[end] = torch.from_numpy(final.to_ndarray(format="rgb24")).permute(2, 0, 1)
    return [kept[min(i, end)] for i in indices], indices


def load_video_frames(path: str, num: int, resolution: int) -> tuple[torch.Tensor, list[int]]:
    """A video file, frame directory or ``.npy`` array -> (frames uint8 [num, 3, R, R],
    the sampled frame indices [num]); each frame resized to R x R (antialiased, no crop)."""
    source = Path(path)
    if source.is_dir():
        frames, indices = _frame_dir(source, num)
    elif source.suffix.lower() == ".npy":
        frames, indices = _frame_array(source, num)
    else:
        frames, indices = _decoded(source, num)
    size = [resolution, resolution]
    return torch.stack([TF.resize(f, size, antialias=True) for f in frames]), indices
