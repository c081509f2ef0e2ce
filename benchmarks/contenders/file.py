"""Locks in a local directory: conch ``file://`` against the libraries OpenStack uses.

Every peer here polls: fasteners (and so tooz's file driver and oslo.concurrency's
external locks, which are built on it) retries a non-blocking ``lockf`` with sleeps
growing from 10 ms to 100 ms; filelock retries ``flock`` every 50 ms. conch waits
in a blocking ``flock`` that the kernel ends. The floor is that bare kernel call.
conch's timed wait (``acquire(blocking=seconds)``) waits on inotify events instead: its
floor is a non-blocking ``flock`` retried on the holder's close event.
Each contender works in its own subdirectory of the run's temporary directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar

import fasteners  # type: ignore[import-untyped]
import filelock
from oslo_concurrency import lockutils
from tooz import coordination

import conch
from benchmarks.contenders.base import Contender, LockLike, Settings, Target
from conch.backends.file.inotify import CLOSE_WRITE, Inotify, opened

# flock and the peers' single syscalls take microseconds: many samples are cheap.
SETTINGS = Settings(iterations=20_000, handoff_rounds=300)

# The goals of the file backend's issue (13), checked on figures of the same run.
TARGETS = (
    Target("timed-wait hand-off p50 ≤ 3x a raw blocking flock's", "handoff p50",
           "conch (timed wait)", 3.0, peer="kernel flock"),
    Target("uncontended p50 ≤ 0.6x fasteners'", "uncontended p50", "conch", 0.6,
           peer="fasteners"),
    *(Target(f"contended throughput ≥ fasteners' ({count} processes)", f"throughput {count}",
             "conch", 1.0, higher_is_better=True, peer="fasteners")
      for count in SETTINGS.process_counts),
)


@contextmanager
def target() -> Iterator[str]:
    """A fresh temporary directory, removed after the run."""
    with tempfile.TemporaryDirectory(prefix="conch-bench-file-") as directory:
        yield directory


class _OwnDirectory(Contender):
    """A contender whose files live in ``<target>/<name>``."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.directory = os.path.join(target, self.name)

    def setup(self) -> None:
        os.makedirs(self.directory, exist_ok=True)


class Conch(_OwnDirectory):
    """``conch.connect("file:///dir")``: one coordinator per process."""

    name = "conch"
    distribution = "conch"

    def setup(self) -> None:
        self._coordinator = conch.connect(f"file://{self.directory}")

    def lock(self, name: str) -> LockLike:
        return self._coordinator.lock(name)

    def teardown(self) -> None:
        self._coordinator.stop()


class _TimedWait:
    """A conch lock whose ``acquire()`` waits with a timeout: inotify, not a blocking flock."""

    def __init__(self, lock: conch.Lock) -> None:
        self._lock = lock

    def acquire(self) -> bool:
        return self._lock.acquire(blocking=60.0)

    def release(self) -> None:
        self._lock.release()


class ConchTimedWait(Conch):
    """The same, each acquire with ``blocking=60.0``."""

    name = "conch (timed wait)"

    def lock(self, name: str) -> LockLike:
        return _TimedWait(self._coordinator.lock(name))


class Tooz(_OwnDirectory):
    """tooz's ``file://`` driver: a started coordinator's ``get_lock``."""

    name = "tooz"
    distribution = "tooz"

    def setup(self) -> None:
        member_id = f"bench-{uuid.uuid4()}".encode()
        self._coordinator = coordination.get_coordinator(f"file://{self.directory}", member_id)
        self._coordinator.start()

    def lock(self, name: str) -> LockLike:
        return self._coordinator.get_lock(name.encode())

    def teardown(self) -> None:
        self._coordinator.stop()


class Fasteners(_OwnDirectory):
    """``fasteners.InterProcessLock(path)`` with its default polling."""

    name = "fasteners"
    distribution = "fasteners"

    def lock(self, name: str) -> LockLike:
        lock: LockLike = fasteners.InterProcessLock(os.path.join(self.directory, name))
        return lock


class FileLock(_OwnDirectory):
    """``filelock.FileLock(path)`` with its default polling."""

    name = "filelock"
    distribution = "filelock"

    def lock(self, name: str) -> LockLike:
        lock: LockLike = filelock.FileLock(os.path.join(self.directory, name))
        return lock


class _OsloExternalLock:
    """``with lockutils.lock(name, external=True, lock_path=dir):`` split into two calls.

    This is how OpenStack services take an inter-process lock: each use takes the
    name's in-process semaphore, then a fresh fasteners lock on the file.
    """

    def __init__(self, name: str, lock_path: str) -> None:
        self._name = name
        self._lock_path = lock_path
        self._hold: AbstractContextManager[object] | None = None

    def acquire(self) -> bool:
        hold = lockutils.lock(self._name, external=True, lock_path=self._lock_path)
        hold.__enter__()
        self._hold = hold
        return True

    def release(self) -> None:
        hold, self._hold = self._hold, None
        assert hold is not None, "released without a hold"
        hold.__exit__(None, None, None)



class OsloConcurrency(_OwnDirectory):
    """oslo.concurrency's external lock (``lockutils.lock(..., external=True)``)."""

    name = "oslo.concurrency"
    distribution = "oslo.concurrency"

    def lock(self, name: str) -> LockLike:
        return _OsloExternalLock(name, self.directory)


class _FlockFile:
    """open + flock, flock(UN) + close: the least any flock-based lock does."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class KernelFlock(_OwnDirectory):
    """The floor: bare ``flock`` calls with no bookkeeping (no token, no polling)."""

    name = "kernel flock"
    floor = True
    file_lock: ClassVar[type[_FlockFile]] = _FlockFile

    def lock(self, name: str) -> LockLike:
        return self.file_lock(os.path.join(self.directory, name))


class _InotifyWokenFlock(_FlockFile):
    """The least a timed wait without a thread or a timer does: a waiter tries ``flock``
    without blocking, watches the file for the holder's close (``CLOSE_WRITE``) and tries
    again on each event; the holder's release is its close."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._inotify = Inotify()
        self._poll = select.poll()
        self._poll.register(self._inotify.fd, select.POLLIN)

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        watch = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if watch is None:
                    watch = self._inotify.add_watch(opened(fd), CLOSE_WRITE)
                    continue  # watched now: a release before this is caught by the retry
                self._poll.poll()
                self._inotify.read()
        if watch is not None:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(watch)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        os.close(fd)


class InotifyWokenFlock(KernelFlock):
    """The floor of a timed wait: a non-blocking ``flock`` retried on inotify events."""

    name = "inotify-woken flock"
    file_lock = _InotifyWokenFlock


CONTENDERS: tuple[type[Contender], ...] = (
    Conch, ConchTimedWait, Tooz, Fasteners, FileLock, OsloConcurrency, KernelFlock,
    InotifyWokenFlock,
)
