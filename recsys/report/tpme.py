"""TPME: one efficiency score over a set of methods (time, parameters, memory).

Over a set of K methods, each of time per epoch t, trainable parameters p and peak memory
m is min-max normalised across the set (a constant column normalises to 0), then

    TPME = w_t·t + w_p·p + w_m·m        (default 0.45, 0.10, 0.45; lower is better)

TPME is relative: a score only compares methods scored together (same dataset, same
hardware). A method missing any of t, p, m gets ``None`` and the set is the methods that
have all three, so one incomplete run cannot shift everyone else's score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TPMEWeights:
    """Weights of time, params and memory; non-negative and summing to 1."""

    time: float = 0.45
    params: float = 0.10
    memory: float = 0.45

    def __post_init__(self) -> None:
        values = (self.time, self.params, self.memory)
        if any(not math.isfinite(w) or w < 0 for w in values):
            raise ValueError(f"TPME weights must be finite and non-negative, got {values}")
        if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
            raise ValueError(f"TPME weights must sum to 1, got {values} (sum {sum(values):.6g})")

    @classmethod
    def of(cls, values: Sequence[float]) -> TPMEWeights:
        """From a (time, params, memory) sequence, e.g. the CLI's ``--weights 0.45 0.10 0.45``."""
        if len(values) != 3:
            raise ValueError(f"TPME needs 3 weights (time, params, memory), got {list(values)}")
        return cls(*(float(v) for v in values))

    def __str__(self) -> str:
        return f"{self.time:g}·t + {self.params:g}·p + {self.memory:g}·m"


DEFAULT_WEIGHTS = TPMEWeights()


def min_max(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1] by (v - min) / (max - min); a constant sequence maps to all zeros."""
    low, high = min(values), max(values)
    span = high - low
    return [0.0 if span == 0 else (v - low) / span for v in values]


def tpme(
    times: Sequence[float | None],
    params: Sequence[float | None],
    memories: Sequence[float | None],
    weights: TPMEWeights = DEFAULT_WEIGHTS,
) -> list[float | None]:
    """TPME of each method; the three sequences are aligned (index i = method i).

    Methods with a missing (None or NaN) figure get None and are left out of the
    normalisation of the others.
    """
    if not len(times) == len(params) == len(memories):
        raise ValueError(f"lengths differ: {len(times)} times, {len(params)} params, "
                         f"{len(memories)} memories")
    rows = list(zip(times, params, memories, strict=True))
    complete = [i for i, row in enumerate(rows) if all(v is not None and not math.isnan(v) for v in row)]
    scores: list[float | None] = [None] * len(rows)
    if not complete:
        return scores
    t, p, m = (min_max([float(rows[i][k]) for i in complete]) for k in range(3))
    for j, i in enumerate(complete):
        scores[i] = weights.time * t[j] + weights.params * p[j] + weights.memory * m[j]
    return scores
