"""Names a package exports but imports only when first used.

A plugin's package is imported by every ``integrator`` command (that is how its
hooks are found), so importing its components there would cost every daemon their
modules and client libraries. Instead the package keeps its public names and loads
each on first use::

    __getattr__ = lazy_exports(__name__, {"RedisStreamSink": "integrator_redis.sink"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``exports[name]`` for ``name``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
