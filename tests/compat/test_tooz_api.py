"""The shape of tooz's API: exceptions, the Lock base class, the coordinator's lifecycle,
characteristics, unsupported features and the ``tooz`` alias (on embedded backends)."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import conch
import conch.compat.tooz as tooz
from conch.compat.tooz import coordination, locking

Driver = coordination.CoordinationDriver


@pytest.fixture
def driver(memory_url: str) -> Iterator[Driver]:
    coordinator = coordination.get_coordinator(memory_url, b"member-1")
    coordinator.start()
    yield coordinator
    if coordinator.is_started:
        coordinator.stop()


def test_exceptions_keep_tooz_relationships_and_are_conch_errors() -> None:
    assert tooz.ToozError is coordination.ToozError
    assert tooz.NotImplemented is coordination.NotImplemented
    assert issubclass(tooz.NotImplemented, NotImplementedError)
    assert issubclass(tooz.NotImplemented, tooz.ToozError)
    assert issubclass(tooz.NotImplemented, conch.NotSupported)
    for name in ("ToozConnectionError", "LockAcquireFailed", "ToozDriverChosenPoorly",
                 "OperationTimedOut", "GroupNotCreated", "GroupAlreadyExist",
                 "MemberAlreadyExist", "MemberNotJoined", "GroupNotEmpty",
                 "WatchCallbackNotFound"):
        assert issubclass(getattr(coordination, name), tooz.ToozError), name
    assert issubclass(tooz.ToozError, conch.ConchError)
    assert issubclass(coordination.ToozConnectionError, conch.BackendUnavailable)
    assert issubclass(coordination.LockAcquireFailed, conch.LockAcquireFailed)


@pytest.mark.parametrize("error_class", [tooz.ToozError, tooz.NotImplemented,
                                         coordination.ToozConnectionError,
                                         coordination.LockAcquireFailed])
def test_tooz_errors_carry_their_message_and_cause(error_class: type[tooz.ToozError]) -> None:
    cause = OSError("refused")
    error = error_class("cannot connect", cause)
    assert error.cause is cause
    assert str(error) == "cannot connect"
    assert error_class("no cause").cause is None


class Locked(Exception):
    """Raised by the test lock below when a blocking acquire would wait."""


class DictLock(locking.Lock):
    """A test lock in the style of Cinder's and Manila's MockToozLock: its acquire()
    takes ``blocking`` only."""

    active: ClassVar[set[object]] = set()

    def acquire(self, blocking: Any = True) -> bool:  # type: ignore[override]
        if self.name not in self.active:
            self.active.add(self.name)
            return True
        if not blocking:
            return False
        raise Locked

    def release(self) -> bool:
        self.active.remove(self.name)
        return True


def test_a_subclass_with_a_blocking_only_acquire_works_as_a_context_manager() -> None:
    with DictLock(b"volume-1") as lock:
        assert b"volume-1" in DictLock.active
        with pytest.raises(Locked):
            DictLock(b"volume-1").acquire()
        with pytest.raises(coordination.LockAcquireFailed, match="volume-1"):  # noqa: SIM117
            with DictLock(b"volume-1")(False):
                pass
        assert lock.name == b"volume-1"
    assert b"volume-1" not in DictLock.active


class NamedLock(locking.Lock):
    """Manila's pattern: a Lock subclass wrapping a coordinator's lock, with its own name."""

    def __init__(self, lock_name: str, lock_data: dict[str, Any], coordinator: Driver) -> None:
        super().__init__(str(id(self)))
        self.blocking: bool | float = True
        self.lock = coordinator.get_lock(lock_name.format(**lock_data))

    def acquire(self, blocking: Any = None) -> bool:  # type: ignore[override]
        return self.lock.acquire(blocking=self.blocking if blocking is None else blocking)

    def release(self) -> bool:
        return self.lock.release()


def test_a_subclass_wrapping_a_coordinator_lock_excludes_like_it(driver: Driver) -> None:
    with NamedLock("share-{share_id}", {"share_id": 7}, driver):
        other = NamedLock("share-{share_id}", {"share_id": 7}, driver)
        with pytest.raises(coordination.LockAcquireFailed):  # noqa: SIM117
            with other(False):
                pass
    with NamedLock("share-{share_id}", {"share_id": 7}, driver)(False):
        pass


def test_the_base_lock_needs_a_name_and_defaults_to_not_implemented() -> None:
    with pytest.raises(ValueError, match="name"):
        DictLock(b"")
    with pytest.raises(tooz.NotImplemented):
        DictLock(b"x").is_still_owner()
    with pytest.raises(tooz.NotImplemented):
        DictLock(b"x").break_()
    with pytest.raises(TypeError):
        locking.Lock(b"x")  # type: ignore[abstract]


def test_leader_election_follows_the_coordinators_lifecycle(memory_url: str) -> None:
    coordinator = coordination.get_coordinator(memory_url, b"member-1")
    elected: list[coordination.LeaderElected] = []
    coordinator.watch_elected_as_leader(b"group", elected.append)  # before start(), as tooz
    assert coordinator.stand_down_group_leader(b"group") is False
    with pytest.raises(tooz.ToozError) as failure:
        coordinator.get_leader(b"group")
    assert isinstance(failure.value, conch.NotStarted)
    with pytest.raises(tooz.ToozError):
        coordinator.run_watchers()
    coordinator.start()
    assert coordinator.run_watchers() == []
    assert [(event.group_id, event.member_id) for event in elected] == [(b"group", b"member-1")]
    assert "group" in repr(elected[0]) and "member-1" in repr(elected[0])
    coordinator.unwatch_elected_as_leader(b"group", elected.append)
    with pytest.raises(coordination.WatchCallbackNotFound):
        coordinator.unwatch_elected_as_leader(b"group", elected.append)
    coordinator.stop()


@pytest.mark.parametrize("call", [
    lambda driver: driver.create_group(b"group"),
    lambda driver: driver.get_groups(),
    lambda driver: driver.join_group(b"group"),
    lambda driver: driver.join_group_create(b"group"),
    lambda driver: driver.get_members(b"group"),
    lambda driver: driver.watch_join_group(b"group", print),
    lambda driver: driver.join_partitioned_group(b"group"),
])
def test_group_calls_raise_not_implemented_where_the_backend_has_no_groups(
    memory_url: str, monkeypatch: pytest.MonkeyPatch, call: Any
) -> None:
    # Gnocchi catches tooz.NotImplemented from join_partitioned_group and works alone.
    coordinator = coordination.get_coordinator(memory_url, b"member-1")
    backend = coordinator.conch_coordinator._backend_class
    monkeypatch.setattr(backend, "capabilities",
                        dataclasses.replace(backend.capabilities, groups=False))
    coordinator.start()
    try:
        with pytest.raises(tooz.NotImplemented, match="groups") as failure:
            call(coordinator)
        assert isinstance(failure.value, conch.NotSupported)
    finally:
        coordinator.stop()


def test_lifecycle_follows_tooz(memory_url: str) -> None:
    coordinator = coordination.get_coordinator(memory_url, "str-member")
    assert not coordinator.is_started
    assert coordinator.requires_beating is False
    with pytest.raises(tooz.ToozError) as not_started:
        coordinator.get_lock(b"x")
    assert isinstance(not_started.value, conch.NotStarted)
    with pytest.raises(tooz.ToozError, match="not started"):
        coordinator.stop()
    coordinator.start(start_heart=True)
    assert coordinator.heartbeat() is None
    with pytest.raises(tooz.ToozError, match="already started"):
        coordinator.start()
    coordinator.stop()
    coordinator.start()  # a stopped coordinator starts again, as in tooz
    assert coordinator.get_lock(b"x").acquire()
    coordinator.stop()


def test_characteristics_describe_the_backend(tmp_path: pathlib.Path, memory_url: str) -> None:
    c = coordination.Characteristics
    on_file = coordination.get_coordinator(f"file://{tmp_path}", b"m",
                                           characteristics=[c.NON_TIMEOUT_BASED])
    assert c.DISTRIBUTED_ACROSS_PROCESSES in on_file.CHARACTERISTICS
    with pytest.raises(coordination.ToozDriverChosenPoorly, match="DISTRIBUTED_ACROSS_HOSTS"):
        coordination.get_coordinator(f"file://{tmp_path}", b"m",
                                     characteristics=[c.DISTRIBUTED_ACROSS_HOSTS])
    with pytest.raises(coordination.ToozDriverChosenPoorly):
        coordination.get_coordinator(memory_url, b"m",
                                     characteristics=[c.DISTRIBUTED_ACROSS_PROCESSES])


def test_blocking_must_be_a_bool_or_seconds(driver: Driver) -> None:
    lock = driver.get_lock(b"x")
    with pytest.raises(TypeError, match="blocking"):
        lock.acquire(blocking=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blocking"):
        lock.acquire(blocking=-1)
    assert lock.acquire(blocking="2")  # tooz takes numbers as strings too


def test_a_bad_option_is_an_invalid_url_not_a_tooz_error(tmp_path: pathlib.Path) -> None:
    # Services retry ToozError at start (Manila reconnects forever): a config mistake must
    # stop them instead.
    with pytest.raises(conch.InvalidURL) as failure:
        coordination.get_coordinator("redis://127.0.0.1?namespace=x", b"m")
    assert not isinstance(failure.value, tooz.ToozError)
    assert isinstance(failure.value, ValueError)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_install_as_tooz_makes_import_tooz_use_conch() -> None:
    result = run_python("""
        import conch.compat.tooz
        conch.compat.tooz.install_as_tooz()
        import tooz, tooz.coordination
        from tooz import coordination, locking
        assert tooz is conch.compat.tooz, tooz
        assert coordination is conch.compat.tooz.coordination
        assert issubclass(locking.Lock, conch.compat.tooz.locking.Lock)
        c = tooz.coordination.get_coordinator("memory://alias", b"m")
        c.start()
        with c.get_lock(b"x"):
            print("locked")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "locked"


def test_install_as_tooz_refuses_when_the_real_tooz_is_loaded() -> None:
    pytest.importorskip("tooz")
    result = run_python("""
        import tooz.coordination
        import conch.compat.tooz
        try:
            conch.compat.tooz.install_as_tooz()
        except RuntimeError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "must run before tooz is imported" in result.stdout
