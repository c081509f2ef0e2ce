"""describe / holders / break_lock on every backend: what an operator sees from outside."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.backends.base import Deadline
from conch.introspection import HOST, BreakRefused, HolderChanged
from conch.lock import lock_key
from tests.conftest import BACKENDS
from tests.servers.base import wait_until
from tests.servers.mysql import DATABASE, MySQLServer
from tests.servers.postgresql import PostgreSQLServer

# What each backend shows of a holder (docs/introspection.md): the stamp a holder
# records with its hold (member id, host, pid, start) and the token, plus what the
# server knows. PostgreSQL records nothing per hold (a write per acquire costs too
# much): the server tells the member (application_name) and the client address.
STAMPED = {"member_id", "host", "pid", "acquired_at", "token"}
KNOWN_FIELDS = {
    "file": STAMPED,
    "memory": STAMPED,
    "redis": STAMPED | {"ttl_left"},
    "memcached": STAMPED | {"ttl_left"},
    "zookeeper": STAMPED | {"session"},
    "etcd": STAMPED | {"ttl_left", "session"},
    "mysql": STAMPED | {"session"},
    "postgresql": {"member_id", "host", "session"},
}
KNOWS_WAITERS = {"memory", "postgresql", "mysql", "zookeeper", "etcd"}
LEARNS_WITHIN = 15.0


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, through the sync API only (this is the coordinator's API)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def observer(url: str) -> Iterator[conch.Coordinator]:
    """Another member, looking at the locks (as `conch show` does)."""
    with conch.connect(url, member_id="observer") as started:
        if not started.capabilities.introspection:
            with pytest.raises(conch.NotSupported):
                started.describe("anything")
            pytest.skip(f"{started.url} does not declare introspection")
        yield started


@pytest.fixture
def holder(url: str) -> Iterator[conch.Coordinator]:
    with conch.connect(url, member_id="holder-1") as started:
        yield started


def test_describe_shows_who_holds_the_lock_since_when_and_its_token(
    holder: conch.Coordinator, observer: conch.Coordinator, backend: str, lock_name: str
) -> None:
    lock = holder.lock(lock_name)
    before = time.time()
    assert lock.acquire()
    after = time.time()
    token = lock.token
    try:
        info = observer.describe(lock_name)
    finally:
        lock.release()
    assert info.name == lock_name
    assert info.held
    seen = info.holder
    assert seen is not None
    known = {name for name, value in seen.to_json().items() if value is not None}
    assert known == KNOWN_FIELDS[backend]
    assert seen.member_id == "holder-1"
    assert seen.host == (HOST if "pid" in known else "127.0.0.1")  # else the client address
    if "pid" in known:
        assert seen.pid == os.getpid()
        assert seen.token == token
        assert seen.acquired_at is not None and before - 1 <= seen.acquired_at <= after + 1
    if seen.ttl_left is not None:
        assert 0 < seen.ttl_left <= 60
    assert (info.waiters is not None) == (backend in KNOWS_WAITERS)


def test_a_free_lock_has_no_holder(observer: conch.Coordinator, holder: conch.Coordinator,
                                   lock_name: str) -> None:
    assert not observer.describe(lock_name).held
    with holder.lock(lock_name):
        pass
    info = observer.describe(lock_name)
    assert info.holder is None
    assert info.waiters in (None, 0)


def test_holders_lists_the_held_locks_under_a_prefix_sorted_by_name(
    holder: conch.Coordinator, observer: conch.Coordinator, lock_name: str
) -> None:
    names = [f"{lock_name}/b", f"{lock_name}/a", f"{lock_name}/ü \x00 é"]
    locks = [holder.lock(name) for name in names]
    other = holder.lock(f"x{lock_name}")
    for lock in [*locks, other]:
        assert lock.acquire()
    try:
        listed = observer.holders(lock_name)
        assert [info.name for info in listed] == sorted(names, key=str.encode)
        assert all(info.holder is not None and info.holder.member_id == "holder-1"
                   for info in listed)
        tokens = {info.holder.token for info in listed}  # type: ignore[union-attr]
        assert tokens == {lock.token for lock in locks} or tokens == {None}
    finally:
        for lock in [*locks, other]:
            lock.release()
    assert observer.holders(lock_name) == []


def test_bytes_names_that_are_not_utf8_are_listed_exactly(
    holder: conch.Coordinator, observer: conch.Coordinator, lock_name: str
) -> None:
    name = lock_name.encode() + b"/\xff\xfe"
    with holder.lock(name):
        [listed] = observer.holders(lock_name.encode())
        assert listed.key == name
        assert listed.name.endswith("/\\xff\\xfe")
        assert observer.describe(name).held


def test_waiters_are_counted_where_the_backend_knows(
    url: str, holder: conch.Coordinator, observer: conch.Coordinator, backend: str,
    lock_name: str
) -> None:
    lock = holder.lock(lock_name)
    assert lock.acquire()
    with conch.connect(url) as other:
        waiter = other.lock(lock_name)
        got: list[bool] = []
        thread = threading.Thread(target=lambda: got.append(waiter.acquire(20)))
        thread.start()
        try:
            if backend in KNOWS_WAITERS:
                wait_until(lambda: observer.describe(lock_name).waiters == 1, 10, "a waiter")
            else:
                time.sleep(0.3)
                assert observer.describe(lock_name).waiters is None
        finally:
            lock.release()
            thread.join(30)
        assert got == [True]
        waiter.release()


def test_break_frees_the_lock_and_the_holder_learns_it_lost_it(
    url: str, holder: conch.Coordinator, observer: conch.Coordinator, lock_name: str
) -> None:
    if not observer.capabilities.breakable:
        with holder.lock(lock_name), pytest.raises(conch.NotSupported):
            observer.break_lock(lock_name)
        pytest.skip(f"{observer.url} does not declare breakable")
    lock = holder.lock(lock_name)
    assert lock.acquire()
    token = observer.describe(lock_name).holder.token  # type: ignore[union-attr]
    assert token in (lock.token, None)  # None: the backend cannot tell it
    broken = observer.break_lock(lock_name, token=token)
    assert broken.holder is not None and broken.holder.token == token
    assert broken.holder.member_id == "holder-1"
    with conch.connect(url) as third:
        successor = third.lock(lock_name)
        assert successor.acquire(LEARNS_WITHIN)
        assert lock.lost.wait(LEARNS_WITHIN), "the broken holder was not told"
        assert not lock.held
        with pytest.raises(conch.LockLost):
            lock.release()
        successor.release()


def test_a_broken_holds_backend_release_raises_lock_lost_once_the_backend_knows(
    holder: conch.Coordinator, observer: conch.Coordinator, lock_name: str
) -> None:
    # A backend learns of a loss a moment before it reports it to the lock object: a
    # release in between must raise LockLost from the backend itself, never pass.
    if not observer.capabilities.breakable:
        pytest.skip(f"{observer.url} does not declare breakable")
    told = threading.Event()
    handle = holder._backend.handle(lock_key(lock_name), lambda reason: told.set())  # type: ignore[union-attr]
    assert handle.acquire(Deadline(5)) is not None
    observer.break_lock(lock_name)
    assert told.wait(LEARNS_WITHIN), "the backend never noticed the break"
    with pytest.raises(conch.LockLost):
        handle.release()


def test_break_with_another_holds_token_breaks_nothing(
    holder: conch.Coordinator, observer: conch.Coordinator, lock_name: str
) -> None:
    if not observer.capabilities.breakable:
        pytest.skip(f"{observer.url} does not declare breakable")
    with holder.lock(lock_name) as lock:
        assert lock.token is not None
        if observer.describe(lock_name).holder.token is None:  # type: ignore[union-attr]
            with pytest.raises(conch.NotSupported, match="token"):
                observer.break_lock(lock_name, token=lock.token)
            return
        with pytest.raises(HolderChanged):
            observer.break_lock(lock_name, token=lock.token - 1)
        assert observer.describe(lock_name).held
        assert lock.held and not lock.lost.is_set()
    with pytest.raises(HolderChanged):
        observer.break_lock(lock_name, token=1)


def test_breaking_a_free_lock_does_nothing(observer: conch.Coordinator, lock_name: str) -> None:
    if not observer.capabilities.breakable:
        pytest.skip(f"{observer.url} does not declare breakable")
    assert observer.break_lock(lock_name).holder is None


def test_postgresql_refuses_to_break_a_hold_of_a_role_it_may_not_signal(
    postgresql_server: PostgreSQLServer, postgresql_url: str, lock_name: str
) -> None:
    role = f"viewer_{uuid.uuid4().hex[:12]}"
    postgresql_server.execute(f"CREATE ROLE {role} LOGIN")  # no password: trusted over TCP
    try:
        viewer_url = postgresql_url.replace(postgresql_url.split("//")[1].split("@")[0], role)
        with conch.connect(postgresql_url) as holder, holder.lock(lock_name) as lock:
            # The holder's connect created them: the viewer may use them, not create them.
            postgresql_server.execute(
                f"GRANT USAGE ON SEQUENCE conch_fencing_token TO {role};"
                f" GRANT SELECT, INSERT ON conch_lock_names TO {role}")
            viewer = conch.connect(viewer_url)
            assert viewer.describe(lock_name).held
            with viewer, pytest.raises(BreakRefused, match="pg_signal_backend"):
                viewer.break_lock(lock_name)
            assert lock.held and not lock.lost.is_set()
    finally:
        postgresql_server.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_mysql_refuses_to_break_a_hold_of_another_user_without_the_privilege(
    mysql_server: MySQLServer, mysql_url: str, lock_name: str
) -> None:
    user = f"viewer_{uuid.uuid4().hex[:12]}"
    mysql_server.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'viewer-pw'",
                         f"GRANT ALL ON `{DATABASE}`.* TO '{user}'@'127.0.0.1'")
    try:
        viewer_url = mysql_server.url_with(password="viewer-pw", user=user)
        with conch.connect(mysql_url) as holder, conch.connect(viewer_url) as viewer, \
                holder.lock(lock_name) as lock:
            assert viewer.describe(lock_name).held
            with pytest.raises(BreakRefused, match="CONNECTION ADMIN"):
                viewer.break_lock(lock_name)
            assert lock.held and not lock.lost.is_set()
    finally:
        mysql_server.execute(f"DROP USER '{user}'@'127.0.0.1'")
