"""Registries: one name -> member table per kind (item towers, encoders, readers, user
encoders, weight packages), filled by a decorator and completed by discovery.

    TOWERS = Registry("adapter", package="recsys.adapters", group="recsys.adapters")

    @TOWERS.register("iisan")
    class IISANTower(ItemTower): ...

    TOWERS.get("iisan")   # -> IISANTower
    TOWERS.names()        # every registered name, sorted

Nothing has to be listed anywhere: the first ``get`` / ``names`` / ``items`` imports every
module of ``package`` (``pkgutil``; modules whose name starts with ``_`` are skipped) and
loads every entry point of ``group``, so a module's decorators have run before a name is
looked up. A third-party package adds members without touching this one by declaring, in its
own ``pyproject.toml``::

    [project.entry-points."recsys.adapters"]
    my_tower = "my_package.my_tower"      # imported; its @TOWERS.register runs

Discovery runs once per registry and process; a module that fails to import raises with the
entry point or module named.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> member table of one kind (see module docstring).

    Args:
        kind: what a member is, for messages ("adapter", "encoder kind", ...).
        package: dotted package whose modules are imported by discovery (None: none).
        group: entry-point group of third-party members.
    """

    def __init__(self, kind: str, package: str | None, group: str) -> None:
        self.kind = kind
        self.package = package
        self.group = group
        self._members: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its argument under ``name`` (re-registering the same object,
        e.g. on a module reload, is allowed; another object under a taken name is not)."""

        def decorate(member: T) -> T:
            known = self._members.get(name)
            if known is not None and known is not member and _qualname(known) != _qualname(member):
                raise ValueError(f"{self.kind} {name!r} is registered twice: {_qualname(known)} and "
                                 f"{_qualname(member)}")
            self._members[name] = member
            return member

        return decorate

    def get(self, name: str) -> T:
        """The member registered as ``name``; KeyError listing the registered names."""
        self._discover()
        if name not in self._members:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {self.names()}")
        return self._members[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._discover()
        return sorted(self._members)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, member) pairs in name order."""
        return ((name, self._members[name]) for name in self.names())

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._members

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # also guards against a discovered module looking names up
        try:
            self._import_members()
        except BaseException:
            self._discovered = False
            raise

    def _import_members(self) -> None:
        if self.package is not None:
            root = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(root.__path__, prefix=f"{self.package}."):
                if not module.name.rsplit(".", 1)[-1].startswith("_"):
                    importlib.import_module(module.name)
        for entry in importlib.metadata.entry_points(group=self.group):
            try:
                entry.load()
            except Exception as err:
                raise ImportError(
                    f"entry point {entry.name!r} = {entry.value!r} of group {self.group!r} "
                    f"(a {self.kind} plugin) failed to load: {err}"
                ) from err


def _qualname(member: object) -> str:
    return f"{getattr(member, '__module__', '?')}.{getattr(member, '__qualname__', repr(member))}"
