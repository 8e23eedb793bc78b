"""Field paths (``body.user.name``, ``headers.x-repo``) and copy-on-write message edits.

A path names its root explicitly, ``body``, ``headers`` or ``attributes``, then
keys separated by dots. A key holding a dot is quoted: ``body."a.b".c``; a number
indexes an existing array element (``body.items.0``). Unlike an expression, a path
needs no quoting for ``-``, which is why ``copy``, ``rename``, ``delete`` and the
targets of ``map`` are paths.

:class:`MessageEditor` changes a message without touching the original: every
container on the way to a change is copied once, the first time it is written,
so the input message (which other sinks may share) stays as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from integrator.errors import IntegratorError
from integrator.message import Message

ROOTS = ("body", "headers", "attributes")
_SEGMENT = re.compile(r'"(?P<quoted>[^"]*)"|(?P<bare>[^."]+)')


class _Missing:
    """The value of a path that is not there (``None`` is a value: JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class PathError(IntegratorError, ValueError):
    """Raised when a field path is malformed, or cannot be written in a message."""


@dataclass(frozen=True)
class FieldPath:
    """A parsed path: its root and the keys below it."""

    text: str
    root: str
    keys: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        segments = _split(text)
        root, keys = segments[0], tuple(segments[1:])
        if root not in ROOTS:
            raise PathError(
                f"path {text!r} must start with one of {', '.join(ROOTS)} (for example 'body.id')"
            )
        if root == "headers" and len(keys) > 1:
            raise PathError(f"path {text!r}: headers are flat, use 'headers.NAME'")
        return cls(text, root, keys)

    def __str__(self) -> str:
        return self.text


def _split(text: str) -> list[str]:
    if not isinstance(text, str) or not text:
        raise PathError("a path cannot be empty")
    segments: list[str] = []
    position = 0
    while True:
        match = _SEGMENT.match(text, position)
        if match is None:
            raise PathError(f"path {text!r} is malformed at character {position + 1}")
        segments.append(match["quoted"] if match["quoted"] is not None else match["bare"])
        position = match.end()
        if position == len(text):
            return segments
        if text[position] != ".":
            raise PathError(f"path {text!r} is malformed at character {position + 1}")
        position += 1


def _index(container: list[Any], key: str) -> int | None:
    if not key.lstrip("-").isdigit():
        return None
    index = int(key)
    return index if -len(container) <= index < len(container) else None


def _header_text(value: Any) -> str:
    """Header values are strings; other values are written as JSON text."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


class MessageEditor:
    """Reads and writes paths of one message, copying containers before changing them."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.roots: dict[str, Any] = {
            "body": message.body,
            "headers": message.headers,
            "attributes": message.attributes,
        }
        # Containers this editor made, kept alive so that their ids stay unique.
        self._owned: dict[int, Any] = {}

    def result(self) -> Message:
        """The edited message (same id, trace and creation time as the input)."""
        return self.message.evolve(
            body=self.roots["body"],
            headers=self.roots["headers"],
            attributes=self.roots["attributes"],
        )

    def get(self, path: FieldPath) -> Any:
        """The value at ``path``, or :data:`MISSING` when any part of it is absent."""
        value = self.roots[path.root]
        for key in path.keys:
            if isinstance(value, dict):
                value = value.get(key, MISSING)
            elif isinstance(value, list) and (index := _index(value, key)) is not None:
                value = value[index]
            else:
                return MISSING
            if value is MISSING:
                return MISSING
        return value

    def has(self, path: FieldPath) -> bool:
        return self.get(path) is not MISSING

    def set(self, path: FieldPath, value: Any) -> None:
        """Write ``value`` at ``path``, creating missing objects on the way."""
        if path.root == "headers":
            self._set_header(path, value)
            return
        if not path.keys:
            if path.root == "attributes" and not isinstance(value, dict):
                raise PathError(
                    f"cannot set attributes to {describe_kind(value)}: it must be an object"
                )
            self.roots[path.root] = value
            return
        parent = self._container(path, path.keys[:-1], create=True)
        self._store(path, parent, path.keys[-1], value)

    def delete(self, path: FieldPath) -> Any:
        """Remove the value at ``path`` and return it (:data:`MISSING` if it was absent)."""
        if not self.has(path):
            return MISSING
        if not path.keys:
            old = self.roots[path.root]
            self.roots[path.root] = None if path.root == "body" else {}
            return old
        parent = self._container(path, path.keys[:-1], create=False)
        key = path.keys[-1]
        if isinstance(parent, dict):
            return parent.pop(key)
        index = _index(parent, key)
        assert index is not None  # has() found it
        return parent.pop(index)

    # -- internals ---------------------------------------------------------------------

    def _set_header(self, path: FieldPath, value: Any) -> None:
        if not path.keys:
            if not isinstance(value, dict):
                raise PathError(
                    f"cannot set headers to {describe_kind(value)}: it must be an object"
                )
            self.roots["headers"] = {
                str(k): _header_text(v) for k, v in value.items() if v is not None
            }
            return
        headers = self._own(self.roots["headers"])
        self.roots["headers"] = headers
        if value is None:
            headers.pop(path.keys[0], None)
        else:
            headers[path.keys[0]] = _header_text(value)

    def _own(self, container: Any) -> Any:
        """The container itself if this editor made it, else a shallow copy it now owns."""
        if id(container) in self._owned:
            return container
        copy = dict(container) if isinstance(container, dict) else list(container)
        self._owned[id(copy)] = copy
        return copy

    def _container(self, path: FieldPath, keys: tuple[str, ...], *, create: bool) -> Any:
        """The owned container holding the last key of ``path``."""
        root = self.roots[path.root]
        if root is None and create:
            root = {}
        if not isinstance(root, dict | list):
            raise PathError(
                f"cannot set {path}: {path.root} is {describe_kind(root)}, not an object"
            )
        node = self.roots[path.root] = self._own(root)
        walked = path.root
        for key in keys:
            if isinstance(node, dict):
                child = node.get(key)
                if child is None and create:
                    child = {}
            else:
                index = _index(node, key)
                if index is None:
                    raise PathError(f"cannot set {path}: {walked} has no element {key}")
                child = node[index]
            walked = f"{walked}.{key}"
            if not isinstance(child, dict | list):
                raise PathError(
                    f"cannot set {path}: {walked} is {describe_kind(child)}, not an object"
                )
            child = self._own(child)
            self._store(path, node, key, child)
            node = child
        return node

    def _store(self, path: FieldPath, node: Any, key: str, value: Any) -> None:
        if isinstance(node, dict):
            node[key] = value
            return
        index = _index(node, key)
        if index is None:
            raise PathError(f"cannot set {path}: no array element {key}")
        node[index] = value


def describe_kind(value: Any) -> str:
    """A short, value-free description for error messages ("a string", "an array")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
