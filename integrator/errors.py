"""Typed exceptions, one base per area; only the CLI turns them into exit codes."""

from __future__ import annotations

from typing import Any


class IntegratorError(Exception):
    """Base of every error integrator raises on purpose."""


class ConfigError(IntegratorError):
    """Raised when a configuration file cannot be loaded or is invalid.

    ``problems`` holds one human-readable line per problem found, so an operator
    sees every mistake at once rather than fixing them one run at a time.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(IntegratorError):
    """Raised when a plugin registers something invalid (bad name, duplicate, wrong type)."""


class ComponentMissing(IntegratorError):
    """Raised when a config uses a component type that no loaded plugin provides."""


class StoreError(IntegratorError):
    """Raised when the durable store cannot read or write (disk full, read-only, corrupt).

    Nothing is acknowledged upstream when this is raised.
    """


class UnstorableOutput(IntegratorError):
    """Raised by a store's ``route_done`` when an output of the chain cannot be encoded
    (a value the store's format cannot hold); ``item`` is the inbox item it came from.
    Nothing of that call is written: the engine dead-letters the item and commits the rest.
    """

    def __init__(self, item: Any, reason: str) -> None:
        super().__init__(reason)
        self.item = item
        self.reason = reason


class DeliveryError(IntegratorError):
    """Raised by a sink (or middleware) when a message could not be delivered.

    ``retriable`` says whether trying again may help (network error, timeout, 429, 5xx);
    ``retry_after`` is the delay in seconds the remote asked for, if any.
    """

    def __init__(
        self, reason: str, *, retriable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retriable = retriable
        self.retry_after = retry_after


class Reject(DeliveryError):
    """Raised when a message can never succeed (invalid, poison); it goes straight to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retriable=False)
