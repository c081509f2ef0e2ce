"""The SQL backends' pool: idle connections reused most recent first, within the idle limit
and age; connections lent out counted until given back; closing and forking."""

from __future__ import annotations

import os

import pytest

from conch.backends.kit.pool import Pool


class _Stopped(Exception):
    pass


class _Connections:
    """Connections as numbers; what the pool ended and forgot."""

    def __init__(self) -> None:
        self.ended: list[int] = []
        self.forgotten: list[int] = []
        self.broken: set[int] = set()

    def pool(self, keep_idle: int = 2, max_idle_age: float = 60.0) -> Pool[int]:
        return Pool(self.ended.append, self.forgotten.append, keep_idle, _Stopped,
                    lambda connection, idle: connection not in self.broken and idle < max_idle_age)


def test_the_most_recently_given_back_is_lent_first_and_counted_as_lent() -> None:
    connections = _Connections()
    pool = connections.pool()
    assert pool.idle_one() is None
    for connection in (1, 2):
        pool.give_back(pool.lend(connection))
    assert pool.idle_one() == 2
    assert pool.lent == {2}
    pool.give_back(2)
    assert pool.lent == set()
    assert connections.ended == []


def test_beyond_the_idle_limit_or_not_kept_a_connection_is_ended() -> None:
    connections = _Connections()
    pool = connections.pool(keep_idle=1)
    for connection in (1, 2):
        pool.give_back(pool.lend(connection))
    pool.give_back(pool.lend(3), keep=False)
    assert connections.ended == [2, 3]
    assert pool.idle_one() == 1


def test_an_unusable_or_too_old_idle_connection_is_ended_not_lent() -> None:
    connections = _Connections()
    pool = connections.pool()
    pool.give_back(pool.lend(1))
    pool.give_back(pool.lend(2))
    connections.broken.add(2)
    assert pool.idle_one() == 1
    assert connections.ended == [2]
    stale = connections.pool(max_idle_age=0.0)
    stale.give_back(stale.lend(3))
    assert stale.idle_one() is None
    assert connections.ended == [2, 3]


def test_ending_idle_connections_by_age() -> None:
    connections = _Connections()
    pool = connections.pool()
    pool.give_back(pool.lend(1))
    pool.end_idle(older_than=60.0)
    assert connections.ended == []
    pool.end_idle()
    assert connections.ended == [1]


def test_closing_ends_the_idle_returns_the_lent_and_lends_no_more() -> None:
    connections = _Connections()
    pool = connections.pool()
    pool.give_back(pool.lend(1))
    pool.lend(2)
    assert pool.close() == [2]
    assert connections.ended == [1]
    with pytest.raises(_Stopped):
        pool.idle_one()
    with pytest.raises(_Stopped):
        pool.lend(3)
    pool.give_back(2)  # a hold released after the stop: ended, not kept
    assert connections.ended == [1, 3, 2]


def test_a_forked_child_forgets_every_connection_and_the_parent_keeps_them() -> None:
    connections = _Connections()
    pool = connections.pool()
    pool.give_back(pool.lend(1))
    pool.lend(2)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write_end, repr((sorted(connections.forgotten), pool.idle_one(),
                                  sorted(pool.lent), connections.ended)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    assert report == repr(([1, 2], None, [], []))
    assert connections.forgotten == []
    assert pool.lent == {2}
    assert pool.idle_one() == 1
