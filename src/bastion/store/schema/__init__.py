"""Schema migrations added after version 1, one module per migration.

Every module in this package defines ``MIGRATION``, a :class:`Migration` with a version number
of its own; :func:`discover` collects them in version order and refuses two with one version.
Version 1 (clients, API keys, revocations, change feed, audit log) lives in
:mod:`bastion.store.migrations`, which joins both into ``MIGRATIONS``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``statements`` run for every dialect, then the dialect's own extras."""

    version: int
    name: str
    statements: tuple[str, ...]
    dialect_statements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def discover() -> tuple[Migration, ...]:
    """Every ``MIGRATION`` of this package's modules, in version order.

    Raises ``RuntimeError`` for a module without one or for two modules with one version: both
    are programming errors that must stop the process before it touches a database.
    """
    found: dict[int, tuple[str, Migration]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        migration = getattr(module, "MIGRATION", None)
        if not isinstance(migration, Migration):
            raise RuntimeError(f"{module.__name__} defines no MIGRATION")
        if migration.version in found:
            other = found[migration.version][0]
            raise RuntimeError(
                f"{module.__name__} and {other} both define migration {migration.version}"
            )
        found[migration.version] = (module.__name__, migration)
    return tuple(found[v][1] for v in sorted(found))
