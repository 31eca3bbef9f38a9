"""Media files of the synthetic generator: one image, video or audio clip per item whose
pattern is that of a cluster (``data_prep/readers/synthetic.py`` decides which cluster each
item's media shows).

Each medium draws its cluster-level style once from the generator's rng, then renders items
in chunks, vectorised over the chunk (per-item variation from the same rng), and saves one
file per item:

- ``image``: RGB PNG [S, S, 3], S = ``image_size``. Stripes at the cluster's angle and
  spatial frequency in the cluster's colour; per item a stripe phase and pixel noise.
- ``video``: mp4 (codec mpeg4, pix_fmt yuv420p, 8 fps) of T = ``video_frames`` RGB frames
  [T, V, V, 3], V = ``video_size`` (even). A square of the cluster's colour and size on the
  cluster's background colour moves in the cluster's direction at the cluster's speed
  (wrapping around the edges); per item a start position and uniform pixel noise.
- ``audio``: mono PCM16 WAV at 16 kHz, R = 16000 * ``audio_seconds`` samples. The cluster's
  chord of three sine tones (150-4000 Hz, the root loudest); per item the tone phases and
  loudness, and white noise.

``write_media`` saves to ``<staging_dir>/<folder>/<key><suffix>`` (keys 1..n_items) with a tqdm
progress bar and returns ``<final_dir>/<folder>/<key><suffix>``, absolute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image
from tqdm import tqdm

from data_prep.readers import ReadContext

SAMPLE_RATE = 16_000
VIDEO_FPS = 8

Render = Callable[[np.ndarray], np.ndarray]  # clusters int64 [B] -> B items' arrays [B, ...]


def _image_style(cfg: Mapping, rng: np.random.Generator, n_clusters: int) -> Render:
    """-> render(clusters [B]) -> uint8 [B, S, S, 3]."""
    size = int(cfg["image_size"])
    colour = rng.integers(40, 256, size=(n_clusters, 3)).astype(np.float32)
    angle = rng.uniform(0, np.pi, size=n_clusters)
    frequency = rng.uniform(0.3, 1.5, size=n_clusters)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)

    def render(c: np.ndarray) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, size=len(c))
        along = x * np.cos(angle[c])[:, None, None] + y * np.sin(angle[c])[:, None, None]
        stripes = np.sin(frequency[c][:, None, None] * along + phase[:, None, None]) > 0
        shade = np.where(stripes, 1.0, 0.35)[..., None] * colour[c][:, None, None, :]
        noise = rng.normal(0, 12, size=shade.shape)
        return np.clip(shade + noise, 0, 255).astype(np.uint8)

    return render


def _video_style(cfg: Mapping, rng: np.random.Generator, n_clusters: int) -> Render:
    """-> render(clusters [B]) -> uint8 [B, T, V, V, 3]."""
    frames, size = int(cfg["video_frames"]), int(cfg["video_size"])
    if size % 2:
        raise ValueError(f"video_size must be even (yuv420p), got {size}")
    background = rng.integers(0, 110, size=(n_clusters, 3), dtype=np.int16)
    foreground = rng.integers(110, 256, size=(n_clusters, 3), dtype=np.int16)
    direction = rng.uniform(0, 2 * np.pi, size=n_clusters)
    velocity = rng.uniform(0.03, 0.08, size=n_clusters)[:, None] * size * np.stack(
        [np.cos(direction), np.sin(direction)], axis=1)  # [C, 2] pixels per frame (x, y)
    side = rng.integers(size // 5, size // 3 + 1, size=n_clusters)
    pixels, steps = np.arange(size), np.arange(frames)

    def render(c: np.ndarray) -> np.ndarray:
        start = rng.uniform(0, size, size=(len(c), 2))
        corner = start[:, None, :] + steps[None, :, None] * velocity[c][:, None, :]  # [B, T, 2]
        inside = (pixels - np.floor(corner)[..., None]) % size < side[c][:, None, None, None]
        square = inside[..., 1, :, None] & inside[..., 0, None, :]  # [B, T, V(y), V(x)]
        shade = np.where(square[..., None], foreground[c][:, None, None, None],
                         background[c][:, None, None, None])
        shade += rng.integers(-12, 13, size=shade.shape, dtype=np.int16)  # pixel noise (std 7)
        return np.clip(shade, 0, 255).astype(np.uint8)

    return render


def _audio_style(cfg: Mapping, rng: np.random.Generator, n_clusters: int) -> Render:
    """-> render(clusters [B]) -> float32 [B, R] in [-1, 1]."""
    samples = round(SAMPLE_RATE * float(cfg["audio_seconds"]))
    chord = np.exp(rng.uniform(np.log(150), np.log(4000), size=(n_clusters, 3)))  # Hz
    loudness = np.array([1.0, 0.6, 0.4])  # root loudest: it is the dominant frequency
    time = np.arange(samples) / SAMPLE_RATE

    def render(c: np.ndarray) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, size=(len(c), 3))
        gain = loudness * rng.uniform(0.85, 1.15, size=(len(c), 3))
        tones = np.sin(2 * np.pi * chord[c][:, :, None] * time + phase[:, :, None])  # [B, 3, R]
        wave = 0.3 * np.einsum("bk,bkr->br", gain, tones)
        wave += rng.normal(0, 0.02, size=wave.shape)
        return np.clip(wave, -1, 1).astype(np.float32)

    return render


def _save_image(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, compress_level=1)


def _save_video(frames: np.ndarray, path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _save_audio(wave: np.ndarray, path: Path) -> None:
    soundfile.write(path, wave, SAMPLE_RATE, subtype="PCM_16")


@dataclass(frozen=True)
class _Medium:
    folder: str
    suffix: str
    chunk: int  # items rendered at once (memory: chunk x one item's array)
    style: Callable[[Mapping, np.random.Generator, int], Render]
    save: Callable[[np.ndarray, Path], None]


MEDIA = {
    "image": _Medium("images", ".png", 4096, _image_style, _save_image),
    "video": _Medium("videos", ".mp4", 16, _video_style, _save_video),
    "audio": _Medium("audio", ".wav", 128, _audio_style, _save_audio),
}


def write_media(
    kind: str, cfg: Mapping, rng: np.random.Generator, shown: np.ndarray, n_clusters: int,
    ctx: ReadContext,
) -> list[str]:
    """Write one ``kind`` file (image, video, audio) per item showing the pattern of cluster
    ``shown[i]`` (int64 [n_items]); returns the absolute final path of each item's file."""
    if ctx.staging_dir is None or ctx.final_dir is None:
        raise ValueError(f"synthetic {kind} files need ReadContext.staging_dir and final_dir")
    medium = MEDIA[kind]
    staging = Path(ctx.staging_dir) / medium.folder
    final = Path(ctx.final_dir).absolute() / medium.folder
    staging.mkdir(parents=True, exist_ok=True)
    render = medium.style(cfg, rng, n_clusters)
    n_items = len(shown)
    with tqdm(total=n_items, desc=f"synthetic {kind}", unit="item") as progress:
        for start in range(0, n_items, medium.chunk):
            for key, array in enumerate(render(shown[start:start + medium.chunk]), start=start + 1):
                medium.save(array, staging / f"{key}{medium.suffix}")
                progress.update()
    return [str(final / f"{key}{medium.suffix}") for key in range(1, n_items + 1)]
