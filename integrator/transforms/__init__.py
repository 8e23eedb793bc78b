"""Transform middleware: filter, map, validate, convert, split and python.

Each is an ordinary :class:`integrator.Middleware` registered by
:mod:`integrator.transforms.plugin`; expressions are JMESPath
(:mod:`integrator.transforms.expressions`), and formats are codecs
(:mod:`integrator.transforms.codec`) that plugins can add to.

The names below are imported on first use, so importing one module of this
package (the plugin, or ``convert`` for the daemon's codecs) does not import
them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from integrator.lazy import lazy_exports

if TYPE_CHECKING:
    from integrator.transforms.codec import Codec, CodecError
    from integrator.transforms.convert import (
        BUILTIN_CODECS,
        ConvertMiddleware,
        codecs_from_registry,
    )
    from integrator.transforms.expressions import (
        Expression,
        ExpressionError,
        compile_expression,
    )
    from integrator.transforms.filter import FilterMiddleware
    from integrator.transforms.map import MapMiddleware
    from integrator.transforms.paths import FieldPath, PathError
    from integrator.transforms.python import PythonMiddleware
    from integrator.transforms.split import SplitMiddleware
    from integrator.transforms.templates import Template, TemplateError
    from integrator.transforms.validate import ValidateMiddleware

_MODULES = {
    "BUILTIN_CODECS": "convert",
    "Codec": "codec",
    "CodecError": "codec",
    "ConvertMiddleware": "convert",
    "Expression": "expressions",
    "ExpressionError": "expressions",
    "FieldPath": "paths",
    "FilterMiddleware": "filter",
    "MapMiddleware": "map",
    "PathError": "paths",
    "PythonMiddleware": "python",
    "SplitMiddleware": "split",
    "Template": "templates",
    "TemplateError": "templates",
    "ValidateMiddleware": "validate",
    "codecs_from_registry": "convert",
    "compile_expression": "expressions",
}

__all__ = [
    "BUILTIN_CODECS",
    "Codec",
    "CodecError",
    "ConvertMiddleware",
    "Expression",
    "ExpressionError",
    "FieldPath",
    "FilterMiddleware",
    "MapMiddleware",
    "PathError",
    "PythonMiddleware",
    "SplitMiddleware",
    "Template",
    "TemplateError",
    "ValidateMiddleware",
    "codecs_from_registry",
    "compile_expression",
]


__getattr__ = lazy_exports(
    __name__, {name: f"{__name__}.{module}" for name, module in _MODULES.items()}
)
