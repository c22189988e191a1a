"""``lazy_exports``: a recipe package's public names, imported from its modules on first access (PEP 562)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, modules: dict[str, list[str]]):
    """``(__all__, __getattr__, __dir__)`` for ``package`` exporting ``modules[m]`` names from ``package.m``."""
    where = {name: m for m, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__():
        return sorted(where)

    return sorted(where), __getattr__, __dir__
