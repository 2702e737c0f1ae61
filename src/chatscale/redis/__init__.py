"""Redis connections for every topology, and the naming of every key and channel."""

from chatscale.redis.client import AnyRedis, create_client
from chatscale.redis.connection import RedisConnection, TopologyReport, connect, describe
from chatscale.redis.keys import KeySpace
from chatscale.redis.probe import connect_or_refused
from chatscale.redis.uri import RedisNode, RedisTarget, Topology, parse_redis_uri

__all__ = [
    "AnyRedis",
    "KeySpace",
    "RedisConnection",
    "RedisNode",
    "RedisTarget",
    "Topology",
    "TopologyReport",
    "connect",
    "connect_or_refused",
    "create_client",
    "describe",
    "parse_redis_uri",
]
