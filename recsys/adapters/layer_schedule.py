"""Which hidden-state entries of a frozen encoder feed the side network ("layer dropping").

An encoder with D layers returns D+1 hidden-state entries (entry 0 = embedding output).
IISAN keeps entries [0, 2, 4, ..., 12] of a 12-layer BERT/ViT; IISAN-Versa generalises this
to any depth by splitting the D layers into G even groups and keeping the embedding output
plus the last layer of each group (G = 6 -> 7 side blocks whatever the depth). Groups have
size s = ceil(D / G) counted back from the last layer, the first group taking the
remainder: 32 layers -> 2, 8, 14, 20, 26, 32 (the Versa paper's example). For D = 12 both
rules give the same schedule. When D is too shallow for G groups of size s (e.g. the 7
stages of EfficientNet-Lite0), the G last layers are kept.

Example:
    >>> group_layer_schedule(num_entries=13, groups=6)
    [0, 2, 4, 6, 8, 10, 12]
    >>> group_layer_schedule(num_entries=33, groups=6)
    [0, 2, 8, 14, 20, 26, 32]
"""

from __future__ import annotations


def group_layer_schedule(num_entries: int, groups: int | None) -> list[int]:
    """Indices of the kept hidden-state entries.

    Args:
        num_entries: number of hidden-state entries the encoder returns (layers + 1).
        groups: G, the number of even layer groups; None keeps every entry (no dropping).

    Returns:
        Sorted entry indices: [0] + the last layer of each group (D = num_entries - 1).
        Needs 1 <= G <= D.
    """
    depth = num_entries - 1
    if depth < 1:
        raise ValueError(f"an encoder needs at least one layer, got {num_entries} entries")
    if groups is None:
        return list(range(num_entries))
    if not 1 <= groups <= depth:
        raise ValueError(f"layer groups must be in 1..{depth} for a {depth}-layer encoder, got {groups}")
    size = -(-depth // groups)
    if depth - (groups - 1) * size < 1:
        return [0] + list(range(depth - groups + 1, depth + 1))
    return [0] + [depth - k * size for k in reversed(range(groups))]
