"""The modules, classes and small helpers of tooz 9.1 that services import, compared with the
real tooz where it is installed: driver class names, events, hooks, errors, utils, hashring."""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import conch
import conch.compat.tooz as tooz
from conch.compat.tooz import coordination, hashring, utils

real_coordination = pytest.importorskip("tooz.coordination")
real_hashring = pytest.importorskip("tooz.hashring")
real_utils = pytest.importorskip("tooz.utils")

SAMPLE_URLS = {
    "etcd3+http": "etcd3+http://127.0.0.1:2379",
    "etcd3+https": "etcd3+https://127.0.0.1:2379",
    "file": "file:///tmp/conch-never-created",
    "kazoo": "kazoo://127.0.0.1:2181",
    "zookeeper": "zookeeper://127.0.0.1:2181",
    "memcached": "memcached://127.0.0.1:11211",
    "mysql": "mysql://user@127.0.0.1:3306/db",
    "postgresql": "postgresql://user@127.0.0.1:5432/db",
    "redis": "redis://127.0.0.1:6379",
}
"""A URL for each tooz scheme conch serves (ipc:// and kubernetes:// are refused)."""


@pytest.mark.parametrize("entry_point", [
    entry for entry in importlib.metadata.entry_points(group="tooz.backends")
    if entry.name in SAMPLE_URLS], ids=lambda entry: entry.name)
def test_each_url_gets_a_coordinator_of_tooz_driver_class(
    entry_point: importlib.metadata.EntryPoint,
) -> None:
    module_name, _, class_name = entry_point.value.partition(":")
    ours = importlib.import_module(module_name.replace("tooz.", "conch.compat.tooz.", 1))
    driver_class = getattr(ours, class_name)
    coordinator = coordination.get_coordinator(SAMPLE_URLS[entry_point.name], b"member")
    assert type(coordinator) is driver_class
    assert isinstance(coordinator, coordination.CoordinationDriver)
    assert class_name in repr(coordinator)


def test_conch_only_schemes_get_the_base_class(memory_url: str) -> None:
    assert type(coordination.get_coordinator(memory_url, b"m")) is coordination.CoordinationDriver


def test_install_as_tooz_registers_every_module() -> None:
    code = """
        import conch.compat.tooz
        conch.compat.tooz.install_as_tooz()
        import tooz.drivers.redis, tooz.hashring, tooz.partitioner, tooz.utils
        from tooz import coordination, locking
        from tooz.drivers import etcd3gw, file, memcached, mysql, pgsql, zookeeper
        from tooz.coordination import Hooks, MemberJoinedGroup, MemberLeftGroup
        coordinator = coordination.get_coordinator("redis://127.0.0.1:6379", b"m")
        assert isinstance(coordinator, tooz.drivers.redis.RedisDriver)
        assert tooz.partitioner.Partitioner.DEFAULT_PARTITION_NUMBER == 32
        assert tooz.hashring.HashRing is conch.compat.tooz.hashring.HashRing
        print(zookeeper.KazooDriver.__name__, pgsql.PostgresDriver.__name__)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["KazooDriver", "PostgresDriver"]


def test_the_coordination_module_has_the_names_services_use() -> None:
    for name in ("get_coordinator", "CoordinationDriver", "Characteristics", "Hooks", "Event",
                 "MemberJoinedGroup", "MemberLeftGroup", "LeaderElected", "CoordAsyncResult",
                 "CoordinatorResult", "ToozError", "ToozConnectionError", "OperationTimedOut",
                 "LockAcquireFailed", "GroupNotCreated", "GroupAlreadyExist",
                 "MemberAlreadyExist", "MemberNotJoined", "GroupNotEmpty",
                 "WatchCallbackNotFound", "ToozDriverChosenPoorly", "SerializationError"):
        assert hasattr(real_coordination, name), name  # the list is tooz's
        assert hasattr(coordination, name), name


@pytest.mark.parametrize("make", [
    lambda module: module.GroupNotCreated(b"agents"),
    lambda module: module.GroupAlreadyExist("agents"),
    lambda module: module.GroupNotEmpty(b"agents"),
    lambda module: module.MemberAlreadyExist(b"agents", b"agent-1"),
    lambda module: module.MemberNotJoined("agents", b"agent-1"),
    lambda module: module.WatchCallbackNotFound(b"agents", print),
])
def test_group_errors_take_tooz_arguments_and_say_the_same(make: object) -> None:
    ours, theirs = make(coordination), make(real_coordination)  # type: ignore[operator]
    assert str(ours) == str(theirs)
    assert ours.group_id == theirs.group_id == "agents"
    assert isinstance(ours, tooz.ToozError)


def test_events_read_as_tooz_events() -> None:
    for name in ("MemberJoinedGroup", "MemberLeftGroup"):
        ours = getattr(coordination, name)(b"agents", b"agent-1")
        theirs = getattr(real_coordination, name)(b"agents", b"agent-1")
        assert repr(ours) == repr(theirs)
        assert (ours.group_id, ours.member_id) == (b"agents", b"agent-1")
        assert isinstance(ours, coordination.Event)


def test_hooks_append_remove_and_run_each_callback_in_order() -> None:
    hooks = coordination.Hooks()
    hooks.append(lambda event: ("first", event))
    second = lambda event: ("second", event)  # noqa: E731
    hooks.append(second)
    assert hooks.run("e") == [("first", "e"), ("second", "e")]
    hooks.remove(second)
    assert hooks.run("e") == [("first", "e")]
    assert isinstance(hooks, list)


def test_utils_behave_as_tooz_utils() -> None:
    for module in (utils, real_utils):
        assert module.to_binary("abc") == b"abc"
        assert module.to_binary(b"\xff") == b"\xff"
        assert module.to_binary("é", "utf-8") == "é".encode()
        assert module.convert_blocking(True, 3) == (True, 3)
        assert module.convert_blocking("2.5") == (True, 2.5)
        assert module.millis_to_datetime(1_500) == datetime.datetime.fromtimestamp(1.5)
        with pytest.raises(ValueError, match="tooz error"):
            module.raise_with_cause(RuntimeError, "no")
    cause = OSError("down")
    with pytest.raises(coordination.ToozConnectionError) as raised:
        utils.raise_with_cause(coordination.ToozConnectionError, "cannot connect", cause=cause)
    assert raised.value.cause is cause and raised.value.__cause__ is cause
    with pytest.raises(UnicodeEncodeError):
        utils.to_binary("é")  # ascii by default, as tooz


def test_the_hash_ring_places_as_tooz_and_raises_tooz_unknown_node() -> None:
    nodes: list[str | bytes] = [b"agent-1", b"agent-2", "agent-3"]
    ours, theirs = hashring.HashRing(nodes, partitions=8), real_hashring.HashRing(nodes, 8)
    for key in (b"vnf-%d" % n for n in range(200)):
        assert ours.get_nodes(key, replicas=2) == theirs.get_nodes(key, replicas=2)
    with pytest.raises(hashring.UnknownNode) as unknown:
        ours.remove_node(b"agent-9")
    assert isinstance(unknown.value, tooz.ToozError)
    assert isinstance(unknown.value, conch.UnknownNode)
    assert unknown.value.node == b"agent-9"


def test_starting_on_an_unreachable_host_raises_tooz_connection_error() -> None:
    coordinator = coordination.get_coordinator("redis://localhost:1", b"member")
    with pytest.raises(coordination.ToozConnectionError) as failure:
        coordinator.start()
    assert isinstance(failure.value, tooz.ToozError)
    assert not coordinator.is_started
