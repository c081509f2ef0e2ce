"""Helpers of the ``file://`` tests: other processes (a holder released on request, and a
way to run a script and talk to it over its standard streams), one hold, hand-off delays,
and the name of a lock file."""

from __future__ import annotations

import hashlib
import re
import select
import subprocess
import sys
import threading
import time

import conch
from tests.contract import workers

HOLDER = """
import sys, threading
import conch
with conch.connect(sys.argv[1]) as coordinator:
    lock = coordinator.lock(sys.argv[2])
    assert lock.acquire()
    threading.Thread(target=lambda: (lock.lost.wait(), print("lost", flush=True)),
                     daemon=True).start()
    print("held", lock.token, flush=True)
    sys.stdin.readline()
    try:
        lock.release()
        print("released", flush=True)
    except conch.LockLost:
        print("LockLost", flush=True)
"""
"""Takes lock ``argv[2]`` of ``argv[1]``, says ``held <token>`` (and ``lost`` if told of a
loss), releases it on a line read and says ``released`` or ``LockLost``."""


def run(source: str, *argv: str) -> subprocess.Popen[str]:
    """Python ``source`` in a new process, with ``argv`` and pipes for its streams."""
    return subprocess.Popen(
        [sys.executable, "-c", source, *argv], cwd=workers.REPOSITORY, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def tell(process: subprocess.Popen[str], line: str) -> None:
    """Send ``process`` one line."""
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def said_anything(process: subprocess.Popen[str]) -> bool:
    """True when ``process`` wrote output not read yet (or closed its output)."""
    assert process.stdout is not None
    return bool(select.select([process.stdout], [], [], 0)[0])


def stop(*processes: subprocess.Popen[str] | None) -> None:
    """Kill those of ``processes`` still running (a failed test's), and reap them."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()


def hold_once(lock: conch.Lock | conch.Semaphore) -> int:
    """Take ``lock`` (or a permit; waiting at most 10 s) and release it; the hold's token."""
    assert lock.acquire(blocking=10)
    token = lock.token
    lock.release()
    assert token is not None
    return token


def handoff_delays(holder: conch.Lock | conch.Semaphore, waiter: conch.Lock | conch.Semaphore,
                   rounds: int) -> list[float]:
    """Seconds from ``holder``'s release to the return of ``waiter``'s timed wait, the two
    swapping roles each round (``holder`` holds at first; neither holds after)."""
    delays = []
    for _ in range(rounds):
        returned: list[float] = []
        thread = threading.Thread(target=lambda w=waiter, r=returned: (
            w.acquire(blocking=10), r.append(time.perf_counter())))
        thread.start()
        time.sleep(0.02)  # the waiter watches the files by now
        released = time.perf_counter()
        holder.release()
        thread.join()
        delays.append(returned[0] - released)
        holder, waiter = waiter, holder
    holder.release()
    return delays


def lock_file_name(key: bytes) -> str:
    """The file name of lock ``key``, spelled out here as released conch versions made it:
    a fleet upgraded one process at a time must keep using the same files."""
    readable = re.sub(rb"[^A-Za-z0-9_-]+", b"_", key[:48]).decode("ascii")
    return f"{readable}.{hashlib.sha256(key).hexdigest()[:40]}.lock"
