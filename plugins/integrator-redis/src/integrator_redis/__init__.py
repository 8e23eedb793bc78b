"""integrator-redis: Redis Streams and pub/sub for integrator.

Provides the ``redis_stream`` source (a consumer group, acknowledged after the
engine commits), the ``redis_stream`` sink (XADD) and the ``redis_publish`` sink
(PUBLISH). Installed, it is found through the ``integrator`` entry point.
"""

from __future__ import annotations

from typing import Any

from integrator import hookimpl
from integrator_redis.connection import RedisUnavailable
from integrator_redis.sink import RedisPublishSink, RedisStreamSink
from integrator_redis.source import RedisStreamSource

__all__ = ["RedisPublishSink", "RedisStreamSink", "RedisStreamSource", "RedisUnavailable"]


@hookimpl
def integrator_sources(register: Any) -> None:
    register("redis_stream", RedisStreamSource)


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("redis_stream", RedisStreamSink)
    register("redis_publish", RedisPublishSink)
