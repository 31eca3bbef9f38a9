"""Readable differences between two nested records (configs, manifests, fingerprints).

    >>> differences({"adapter": {"fusion": "gated"}}, {"adapter": {"fusion": "add"}})
    ["adapter.fusion: before 'gated', now 'add'"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(
    old: Mapping[str, Any], new: Mapping[str, Any], labels: tuple[str, str] = ("before", "now")
) -> list[str]:
    """One line per dotted key whose value differs (or exists on one side only), sorted:
    ``"<key>: <labels[0]> <old value>, <labels[1]> <new value>"``; empty when equal."""
    a, b = flatten(old), flatten(new)

    def show(flat: dict[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "<absent>"

    return [
        f"{key}: {labels[0]} {show(a, key)}, {labels[1]} {show(b, key)}"
        for key in sorted(set(a) | set(b))
        if key not in a or key not in b or a[key] != b[key]
    ]
