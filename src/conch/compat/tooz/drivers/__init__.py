"""``tooz.drivers``: one module per tooz driver, each with its driver class's name, so that
imports and ``isinstance`` checks of code written against tooz keep resolving."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver
from conch.compat.tooz.drivers import etcd3gw, file, memcached, mysql, pgsql, redis, zookeeper

__all__ = ["MODULES", "driver_class", "etcd3gw", "file", "memcached", "mysql", "pgsql",
           "redis", "zookeeper"]

MODULES = (etcd3gw, file, memcached, mysql, pgsql, redis, zookeeper)
"""Every driver module, for ``install_as_tooz``."""

_BY_SCHEME: dict[str, type[CoordinationDriver]] = {
    "etcd": etcd3gw.Etcd3Driver,
    "etcd+https": etcd3gw.Etcd3Driver,
    "file": file.FileDriver,
    "memcached": memcached.MemcachedDriver,
    "mysql": mysql.MySQLDriver,
    "postgresql": pgsql.PostgresDriver,
    "postgres": pgsql.PostgresDriver,
    "redis": redis.RedisDriver,
    "rediss": redis.RedisDriver,
    "zookeeper": zookeeper.KazooDriver,
}


def driver_class(conch_scheme: str) -> type[CoordinationDriver]:
    """The class of a coordinator on conch's backend ``conch_scheme`` (tooz's driver class
    for the backends tooz has; :class:`CoordinationDriver` for conch's others)."""
    return _BY_SCHEME.get(conch_scheme, CoordinationDriver)
