"""Typed option models from signatures, and readable messages from validation errors.

A registry member (an item tower, an encoder kind, a reader, a user encoder, a Lightning
class named by ``_target_``) states its options once, as the typed parameters of its
constructor or function; ``options_model`` turns them into a strict pydantic model (unknown
keys rejected, no silent coercion), so the YAML that configures the member is checked
against the very signature that will receive it.

    >>> model = options_model("adapter iisan", IISANTower.option_parameters())
    >>> problems(model, {"fusion": "gatd"}, prefix="adapter")
    ["adapter.fusion: 'gatd': Input should be 'gated' or 'add'"]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

STRICT = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


def parameters_of(function: Callable, skip: int = 0) -> list[inspect.Parameter]:
    """``function``'s parameters after the first ``skip``, with evaluated annotations (the
    strings of ``from __future__ import annotations`` resolved in its module; Any where a
    name only exists for type checkers)."""
    try:
        signature = inspect.signature(function, eval_str=True)
    except Exception:
        signature = inspect.signature(function)
        namespace = getattr(inspect.unwrap(function), "__globals__", {})

        def evaluated(p: inspect.Parameter) -> inspect.Parameter:
            if not isinstance(p.annotation, str):
                return p
            try:
                return p.replace(annotation=eval(p.annotation, namespace))  # code's annotation, not config
            except Exception:
                return p.replace(annotation=Any)

        signature = signature.replace(parameters=[evaluated(p) for p in signature.parameters.values()])
    return list(signature.parameters.values())[skip:]


def _checkable(hint: Any) -> Any:
    """``hint`` if pydantic can validate it, else Any (e.g. a Lightning ``Accelerator``)."""
    if hint is inspect.Parameter.empty:
        return Any
    try:
        adapter = TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return Any
    return hint if adapter.pydantic_complete else Any  # e.g. an unresolved forward reference


def options_model(owner: str, parameters: Sequence[inspect.Parameter]) -> type[BaseModel]:
    """A strict pydantic model whose fields are ``parameters`` (typed by their annotations,
    required when they have no default); a ``**kwargs`` parameter lets unknown keys through."""
    fields: dict[str, Any] = {}
    open_ended = False
    for p in parameters:
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
        elif p.kind is not p.VAR_POSITIONAL:
            fields[p.name] = (_checkable(p.annotation), ... if p.default is p.empty else p.default)
    config = ConfigDict(**{**STRICT, "extra": "allow" if open_ended else "forbid"})
    return create_model(owner.replace(" ", "_"), __config__=config, **fields)


def _clean_location(loc: tuple, values: Any) -> tuple[str, ...]:
    """The part of a pydantic error location that indexes into the input (drops the type
    tags pydantic adds inside unions, e.g. ``'list[int]'``); an absent key ends it."""
    path: list[str] = []
    node = values
    for part in loc:
        if isinstance(node, Mapping):
            path.append(str(part))
            if part not in node:  # a missing or an unknown key names itself
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(str(part))
            node = node[part]
        else:
            break
    return tuple(path)


def problems(model: type[BaseModel], values: Any, prefix: str = "") -> list[str]:
    """Every way ``values`` breaks ``model``, one line each, naming the key (prefixed with
    ``prefix``), the value and what is allowed; [] when it is valid."""
    try:
        model.model_validate(values)
    except ValidationError as err:
        return format_errors(err, values, prefix, sorted(model.model_fields))
    return []


def format_errors(
    err: ValidationError, values: Any, prefix: str = "", allowed: list[str] | None = None
) -> list[str]:
    """Lines of a pydantic ``ValidationError`` (see ``problems``); branches of one union that
    all fail at the same key are joined into one line."""
    merged: dict[str, list[str]] = {}
    for error in err.errors():
        path = ".".join(filter(None, (prefix, *_clean_location(error["loc"], values))))
        kind = error["type"]
        if kind == "extra_forbidden":
            keys = f"; allowed keys: {', '.join(allowed)}" if allowed and len(error["loc"]) == 1 else ""
            line = f"unknown key{keys}"
        elif kind == "missing":
            line = "required, not set"
        else:
            line = f"{error['input']!r}: {error['msg']}"
        merged.setdefault(path or "<root>", [])
        if line not in merged[path or "<root>"]:
            merged[path or "<root>"].append(line)
    return [f"{path}: {' | or: '.join(lines)}" if len(lines) > 1 else f"{path}: {lines[0]}"
            for path, lines in merged.items()]
