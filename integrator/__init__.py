"""integrator: an async, plugin-based integration daemon.

Plugins import what they need from here::

    from integrator import hookimpl, Message, Source, Sink, Middleware
"""

from importlib.metadata import PackageNotFoundError, version

from integrator.components import Intake, Middleware, Next, Sink, Source
from integrator.errors import DeliveryError, IntegratorError, Reject
from integrator.hookspecs import hookimpl
from integrator.lazy import lazy_exports
from integrator.message import Message
from integrator.types import Duration, Secret, Size, redact_url, remember_url_password

try:
    __version__ = version("integrator")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = [
    "DeliveryError",
    "Duration",
    "Intake",
    "IntegratorError",
    "Message",
    "Middleware",
    "Next",
    "Reject",
    "Secret",
    "Sink",
    "Size",
    "Source",
    "__version__",
    "hookimpl",
    "lazy_exports",
    "redact_url",
    "remember_url_password",
]
