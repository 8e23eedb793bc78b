"""Transform middleware: filter, map, validate, convert, split and python.

Each is an ordinary :class:`integrator.Middleware` registered by
:mod:`integrator.transforms.plugin`; expressions are JMESPath
(:mod:`integrator.transforms.expressions`), and formats are codecs
(:mod:`integrator.transforms.codec`) that plugins can add to.
"""

from integrator.transforms.codec import Codec, CodecError
from integrator.transforms.convert import BUILTIN_CODECS, ConvertMiddleware, codecs_from_registry
from integrator.transforms.expressions import Expression, ExpressionError, compile_expression
from integrator.transforms.filter import FilterMiddleware
from integrator.transforms.map import MapMiddleware
from integrator.transforms.paths import FieldPath, PathError
from integrator.transforms.python import PythonMiddleware
from integrator.transforms.split import SplitMiddleware
from integrator.transforms.templates import Template, TemplateError
from integrator.transforms.validate import ValidateMiddleware

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
