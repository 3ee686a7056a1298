"""The check registry: every module of this package that defines a :class:`Check` subclass
decorated with :func:`register` is a check the runner runs.

:func:`registered_checks` imports every module of the package (``base`` aside) once, so adding
a check is adding a file; nothing here lists them. Ids must be unique.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from bastion.scan.checks.base import Check

__all__ = ["Check", "register", "registered_checks"]

_REGISTRY: dict[str, type[Check]] = {}
_LOADED = False
C = TypeVar("C", bound=type[Check])


def register(cls: C) -> C:
    """Class decorator: add a check to the registry (ValueError on a duplicate or bad id)."""
    if not cls.id or not cls.id.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{cls.__name__}: a check needs an id of letters, digits, - and _")
    if not cls.owasp or not cls.cwe:
        raise ValueError(f"{cls.__name__}: a check needs owasp and cwe")
    existing = _REGISTRY.get(cls.id)
    if existing is not None and existing is not cls:
        raise ValueError(f"two checks with id {cls.id!r}: {existing.__name__}, {cls.__name__}")
    _REGISTRY[cls.id] = cls
    return cls


def _load_modules() -> None:
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


def registered_checks() -> list[type[Check]]:
    """Every registered check class, in run order (``order``, then id)."""
    _load_modules()
    return sorted(_REGISTRY.values(), key=lambda c: (c.order, c.id))
