"""Band-limited resampling of waveforms in torch (no torchaudio / scipy dependency).

``resample(wave, orig_rate, new_rate)``: windowed-sinc polyphase resampling. With
g = gcd(orig, new), up = new / g and down = orig / g, output sample n = q * up + j sits at
time q / g + j / new and input sample i = q * down + m at q / g + m / orig, so the filter
taps of output phase j depend on m only: ``up`` kernels (one per phase) slide over the
input with stride ``down``, i.e. ONE strided ``conv1d`` with ``up`` output channels whose
outputs are interleaved. The filter is a Hann-windowed sinc low-pass at
``rolloff * min(orig, new) / 2`` Hz (anti-aliasing when downsampling, interpolation when
upsampling), ``zero_crossings`` lobes each side, every phase normalised to unit DC gain.
Cost per output sample ~ the kernel length (about ``2 * zero_crossings * orig / min(orig,
new)`` + ``orig / new`` taps); rates with a tiny gcd (e.g. 44,101 -> 16,000) make ``up``
kernels large.

Example:
    >>> resample(torch.randn(44_100), 44_100, 16_000).shape    # 1 s
    torch.Size([16000])
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F  # noqa: N812


def _phase_kernels(orig: int, new: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """(kernels [up, 1, K] float64, m_min): tap k of phase j weighs input offset m_min + k."""
    g = math.gcd(orig, new)
    up = new // g
    cutoff = rolloff * min(orig, new) / 2  # Hz
    half_width = zero_crossings / (2 * cutoff)  # seconds each side
    m_min = math.floor(-half_width * orig)
    m_max = math.ceil(((up - 1) / new + half_width) * orig)
    m = torch.arange(m_min, m_max + 1, dtype=torch.float64)
    j = torch.arange(up, dtype=torch.float64)[:, None]
    t = j / new - m / orig  # [up, K] output time - input time
    window = torch.where(t.abs() <= half_width, torch.cos(math.pi * t / (2 * half_width)) ** 2, 0.0)
    taps = torch.sinc(2 * cutoff * t) * window
    taps = taps / taps.sum(dim=1, keepdim=True)
    return taps[:, None, :], m_min


def resample(
    wave: torch.Tensor, orig_rate: int, new_rate: int, zero_crossings: int = 16, rolloff: float = 0.95
) -> torch.Tensor:
    """[..., S] samples at ``orig_rate`` Hz -> [..., ceil(S * new_rate / orig_rate)] at
    ``new_rate`` Hz (same dtype; computed in float32, the kernels in float64)."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sampling rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    kernels, m_min = _phase_kernels(orig_rate, new_rate, zero_crossings, rolloff)
    size = wave.shape[-1]
    out_len = -(-size * up // down)
    per_phase = -(-out_len // up)  # outputs q = 0 .. per_phase - 1 of every phase
    left = -m_min
    right = max(0, (per_phase - 1) * down + kernels.shape[-1] - left - size)
    x = F.pad(wave.reshape(-1, 1, size).float(), (left, right))
    y = F.conv1d(x, kernels.to(x.dtype), stride=down)[..., :per_phase]  # [R, up, per_phase]
    y = y.transpose(1, 2).reshape(y.shape[0], -1)[:, :out_len]
    return y.reshape(*wave.shape[:-1], out_len).to(wave.dtype)
