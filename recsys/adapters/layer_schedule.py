"""Which hidden-state entries of a frozen encoder feed the side network ("layer dropping").

This module alone decides it: the encoders use ``group_layer_schedule`` to cache only a
schedule's entries (``encoder.*.layer_groups``), and the builder (cached features) and
``LiveEncoders`` (encoders in the training step) use ``select_entries`` to pick, among the
entries on offer, those a tower reads (``adapter.layers`` / ``adapter.layer_groups``).

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
    >>> select_entries({"text": list(range(7)), "image": list(range(8))}, layer_groups=None)
    {'text': [0, 1, 2, 3, 4, 5, 6], 'image': [0, 2, 3, 4, 5, 6, 7]}
"""

from __future__ import annotations

from collections.abc import Mapping

Layers = list[int] | dict[str, list[int]] | None


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


def select_entries(
    available: Mapping[str, list[int]],
    layers: Layers = None,
    layer_groups: int | None = None,
    last_only: bool = False,
) -> dict[str, list[int]]:
    """The hidden-state entries each modality's stream reads, among those on offer.

    Args:
        available: modality -> entry indices on offer, in order (a cache's entries, or
            every entry of an encoder).
        layers: explicit entries: one list for every modality, or a dict per modality; each
            must be on offer. Takes precedence over ``layer_groups``.
        layer_groups: G: the group rule over the entries on offer (by position). None (and
            no ``layers``): every entry of the shallowest modality, deeper ones grouped to as
            many, so paired (inter, cross-modal) streams stay aligned layer by layer.
        last_only: only each modality's last entry (towers without a layer schedule).

    Returns:
        modality -> selected entry indices, in order.
    """
    offered = {m: [int(i) for i in entries] for m, entries in available.items()}
    if last_only:
        return {m: entries[-1:] for m, entries in offered.items()}
    if layers is not None:
        per_modality = layers if hasattr(layers, "keys") else {m: layers for m in offered}
        missing = [m for m in offered if m not in per_modality]
        if missing:
            raise ValueError(f"adapter.layers has no schedule for modalities {missing}")
        chosen = {m: [int(i) for i in per_modality[m]] for m in offered}
        for m, entries in chosen.items():
            absent = [i for i in entries if i not in offered[m]]
            if absent:
                raise ValueError(
                    f"adapter.layers selects {m} entries {absent} that are not on offer "
                    f"(available hidden-state entries: {offered[m]})"
                )
        return chosen
    groups = layer_groups or min(map(len, offered.values())) - 1
    return {m: [e[i] for i in group_layer_schedule(len(e), groups)] for m, e in offered.items()}
