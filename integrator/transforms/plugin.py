"""The transform middleware and the built-in codecs, registered as a plugin like any other.

Everything is registered by reference, so loading this plugin imports none of
them: a daemon imports the middleware its config uses (and JMESPath, XML or the
HTTP client only if one of those needs them).
"""

from __future__ import annotations

from typing import Any

from integrator.hookspecs import hookimpl

MIDDLEWARE = {
    "filter": "integrator.transforms.filter:FilterMiddleware",
    "map": "integrator.transforms.map:MapMiddleware",
    "validate": "integrator.transforms.validate:ValidateMiddleware",
    "convert": "integrator.transforms.convert:ConvertMiddleware",
    "split": "integrator.transforms.split:SplitMiddleware",
    "python": "integrator.transforms.python:PythonMiddleware",
    "enrich": "integrator.transforms.enrich:EnrichMiddleware",
    "dedupe": "integrator.transforms.dedupe:DedupeMiddleware",
    "switch": "integrator.transforms.switch:SwitchMiddleware",
    "route": "integrator.transforms.switch:SwitchMiddleware",
}

#: The built-in codecs, by reference (:func:`integrator.transforms.convert.builtin_codecs`
#: imports them for code that runs without a registry).
CODECS = {
    "json": "integrator.transforms.simple_codecs:JsonCodec",
    "msgpack": "integrator.transforms.simple_codecs:MsgpackCodec",
    "csv": "integrator.transforms.csv_codec:CsvCodec",
    "xml": "integrator.transforms.xml_codec:XmlCodec",
    "form": "integrator.transforms.simple_codecs:FormCodec",
    "text": "integrator.transforms.simple_codecs:TextCodec",
    "bytes": "integrator.transforms.simple_codecs:BytesCodec",
}


@hookimpl
def integrator_middleware(register: Any) -> None:
    for name, middleware in MIDDLEWARE.items():
        register(name, middleware)


@hookimpl
def integrator_codecs(register: Any) -> None:
    for name, codec in CODECS.items():
        register(name, codec)
