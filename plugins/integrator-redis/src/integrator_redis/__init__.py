"""integrator-redis: Redis Streams and pub/sub for integrator.

Provides the ``redis_stream`` source (a consumer group, acknowledged after the
engine commits), the ``redis_stream`` sink (XADD) and the ``redis_publish`` sink
(PUBLISH). Installed, it is found through the ``integrator`` entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrator import hookimpl, lazy_exports

if TYPE_CHECKING:
    from integrator_redis.connection import RedisUnavailable
    from integrator_redis.sink import RedisPublishSink, RedisStreamSink
    from integrator_redis.source import RedisStreamSource

__all__ = ["RedisPublishSink", "RedisStreamSink", "RedisStreamSource", "RedisUnavailable"]

#: Where each public name lives. Imported on first use, so that loading the plugin
#: (every ``integrator`` command does) imports none of its components.
_EXPORTS = {
    "RedisPublishSink": "integrator_redis.sink",
    "RedisStreamSink": "integrator_redis.sink",
    "RedisStreamSource": "integrator_redis.source",
    "RedisUnavailable": "integrator_redis.connection",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def integrator_sources(register: Any) -> None:
    register("redis_stream", "integrator_redis.source:RedisStreamSource")


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("redis_stream", "integrator_redis.sink:RedisStreamSink")
    register("redis_publish", "integrator_redis.sink:RedisPublishSink")
