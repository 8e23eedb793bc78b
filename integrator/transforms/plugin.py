"""The transform middleware and the built-in codecs, registered as a plugin like any other."""

from __future__ import annotations

from typing import Any

from integrator.hookspecs import hookimpl
from integrator.transforms.convert import BUILTIN_CODECS, ConvertMiddleware
from integrator.transforms.dedupe import DedupeMiddleware
from integrator.transforms.enrich import EnrichMiddleware
from integrator.transforms.filter import FilterMiddleware
from integrator.transforms.map import MapMiddleware
from integrator.transforms.python import PythonMiddleware
from integrator.transforms.split import SplitMiddleware
from integrator.transforms.switch import SwitchMiddleware
from integrator.transforms.validate import ValidateMiddleware

MIDDLEWARE = {
    "filter": FilterMiddleware,
    "map": MapMiddleware,
    "validate": ValidateMiddleware,
    "convert": ConvertMiddleware,
    "split": SplitMiddleware,
    "python": PythonMiddleware,
    "enrich": EnrichMiddleware,
    "dedupe": DedupeMiddleware,
    "switch": SwitchMiddleware,
    "route": SwitchMiddleware,
}


@hookimpl
def integrator_middleware(register: Any) -> None:
    for name, middleware in MIDDLEWARE.items():
        register(name, middleware)


@hookimpl
def integrator_codecs(register: Any) -> None:
    for name, codec in BUILTIN_CODECS.items():
        register(name, codec)
