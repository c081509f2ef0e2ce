"""Work the contract suite runs in other processes (and, for ``memory://``, other threads).

Run as ``python -m tests.contract.workers <command> ...`` from the repository root,
with the backend URL in ``CONCH_URL`` (not on the command line, where ``ps`` shows
passwords):

``hold NAME [shared|permit:LIMIT]``
    Acquire ``NAME`` (exclusive; shared; a permit of semaphore ``NAME`` of ``LIMIT``),
    print ``held <token>``, then sleep until killed.
``join GROUP``
    Join ``GROUP`` (capabilities ``{"pid": <pid>}``), print ``joined <member id>``, then
    sleep until killed.
``elect NAME HISTORY SECONDS``
    Connect, print ``ready``, then for SECONDS campaign in election ``NAME`` (waiting at
    most 2 s), lead briefly (each term recorded in ``HISTORY``) and resign; print
    ``done <terms>``.
``share NAME HISTORY SECONDS``
    Connect, print ``ready``, then for SECONDS take lock ``NAME`` shared (three times in
    four) or exclusive, each hold recorded in ``HISTORY``; print ``done <sections>``.
``permit NAME LIMIT HISTORY SECONDS``
    The same with permits of semaphore ``NAME`` of ``LIMIT``.
``lead NAME``
    Win election ``NAME``, print ``leading <token>``, then sleep until killed.
``contend NAME HISTORY COUNTER THREADS``
    Connect, print ``ready``, wait for a ``go <seconds>`` line on stdin, then let
    ``THREADS`` lock objects take ``NAME`` in turn for that long, recording each
    critical section in ``HISTORY`` and bumping the counter file ``COUNTER``
    inside it; print ``done <sections>``.

The parent side (:func:`spawn`, :func:`expect`, :func:`finish`) lives here too.
"""

from __future__ import annotations

import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import conch
from conch.history import Lost, Recorder

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def bump(counter: pathlib.Path) -> None:
    """Add one to the number in ``counter`` the unsafe way: read, yield, write.

    Two holders inside at once lose an update, which the final count reveals.
    """
    value = int(counter.read_text() or "0")
    time.sleep(0.0001)  # widen the window in which an intruder would read the same value
    counter.write_text(str(value + 1))


def contend(
    lock: conch.Lock,
    recorder: Recorder,
    counter: pathlib.Path,
    stop_at: float,
) -> int:
    """Take ``lock`` again and again until ``stop_at`` (monotonic); return the sections run."""
    name = lock.name if isinstance(lock.name, str) else lock.name.decode()
    sections = 0
    while time.monotonic() < stop_at:
        lock.acquire()
        try:
            with recorder.section(name, lock.token, Lost(lock.lost.is_set)):
                bump(counter)
        finally:
            lock.release()
        sections += 1
    return sections


def contend_in_threads(
    coordinators: Sequence[conch.Coordinator],
    name: str,
    history: pathlib.Path,
    counter: pathlib.Path,
    threads: int,
    seconds: float,
) -> int:
    """Run :func:`contend` on ``threads`` lock objects (spread over ``coordinators``) at once.

    Returns the number of sections; re-raises the first error a thread met.
    """
    stop_at = time.monotonic() + seconds
    counts: list[int] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        coordinator = coordinators[index % len(coordinators)]
        recorder = Recorder(history, f"{coordinator.member_id}-thread{index}")
        try:
            counts.append(contend(coordinator.lock(name), recorder, counter, stop_at))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return sum(counts)


def spawn(url: str, *argv: str, module: str = "tests.contract.workers") -> subprocess.Popen[str]:
    """Start ``python -m <module> argv...`` (these workers by default) on ``url``."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        cwd=REPOSITORY,
        env={**os.environ, "CONCH_URL": url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expect(worker: subprocess.Popen[str], word: str, timeout: float = 30.0) -> str:
    """Wait for the worker's next line, which must start with ``word``; return the rest."""
    assert worker.stdout is not None
    ready, _, _ = select.select([worker.stdout], [], [], timeout)
    line = worker.stdout.readline() if ready else ""
    if not line.startswith(word):
        worker.kill()
        _, errors = worker.communicate()
        raise AssertionError(f"worker said {line!r}, expected {word!r}; stderr:\n{errors}")
    return line[len(word):].strip()


def finish(worker: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """Wait for the worker to exit successfully; return its remaining output."""
    try:
        output, errors = worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, errors = worker.communicate()
        raise AssertionError(f"worker did not finish in {timeout} s; stderr:\n{errors}") from None
    assert worker.returncode == 0, f"worker exited with {worker.returncode}:\n{errors}"
    return output


def run_to_the_end(url: str, argv: Sequence[str], processes: int) -> int:
    """Run ``processes`` workers ``argv`` on ``url`` together (each prints ``ready``, then
    ``done <count>``); the sum of their counts."""
    started = [spawn(url, *argv) for _ in range(processes)]
    try:
        for process in started:
            expect(process, "ready")
        return sum(int(finish(process).split()[-1]) for process in started)
    finally:
        for process in started:
            process.kill()
            process.communicate()


def takeover_after_kill(url: str, name: str) -> float:
    """Seconds from SIGKILLing a worker process holding ``name`` until this process holds
    it (waiting at most 10 s), checking the new token exceeds the dead holder's."""
    holder = spawn(url, "hold", name)
    try:
        dead_token = int(expect(holder, "held "))
        with conch.connect(url) as coordinator:
            lock = coordinator.lock(name)
            assert lock.acquire(blocking=False) is False
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            killed = time.monotonic()
            assert lock.acquire(blocking=10)
            took = time.monotonic() - killed
            assert lock.token is not None and lock.token > dead_token
            lock.release()
    finally:
        holder.kill()
        holder.communicate()
    return took


def _hold(name: str, kind: str = "exclusive") -> None:
    coordinator = conch.connect()
    lock: conch.Lock | conch.Semaphore = coordinator.lock(name) if kind == "exclusive" \
        else coordinator.lock(name, shared=True) if kind == "shared" \
        else coordinator.semaphore(name, int(kind.removeprefix("permit:")))
    lock.acquire()
    print(f"held {lock.token}", flush=True)
    while True:
        time.sleep(60)


def _join(group: str) -> None:
    coordinator = conch.connect()
    coordinator.group(group).join({"pid": os.getpid()})
    print(f"joined {coordinator.member_id}", flush=True)
    while True:
        time.sleep(60)


def _elect(name: str, history: str, seconds: str) -> None:
    with conch.connect() as coordinator:
        election = coordinator.election(name)
        recorder = Recorder(pathlib.Path(history), coordinator.member_id)
        print("ready", flush=True)
        terms, stop_at = 0, time.monotonic() + float(seconds)
        while time.monotonic() < stop_at:
            if not election.campaign(blocking=2):
                continue
            with recorder.section(name, election.token, Lost(election.lost.is_set)):
                time.sleep(0.002)
            election.resign()
            terms += 1
    print(f"done {terms}", flush=True)


def _take_turns(name: str, history: str, seconds: str,
                make: Callable[[conch.Coordinator, bool], conch.Lock | conch.Semaphore]) -> None:
    with conch.connect() as coordinator:
        recorder = Recorder(pathlib.Path(history), coordinator.member_id)
        print("ready", flush=True)
        sections, stop_at = 0, time.monotonic() + float(seconds)
        while time.monotonic() < stop_at:
            shared = random.random() < 0.75
            hold = make(coordinator, shared)
            if not hold.acquire(blocking=2):
                continue
            with recorder.section(name, hold.token, Lost(hold.lost.is_set), shared):
                time.sleep(random.uniform(0, 0.005))
            hold.release()
            sections += 1
    print(f"done {sections}", flush=True)


def _lead(name: str) -> None:
    election = conch.connect().election(name)
    election.campaign()
    print(f"leading {election.token}", flush=True)
    while True:
        time.sleep(60)


def _contend(name: str, history: str, counter: str, threads: str) -> None:
    with conch.connect() as coordinator:
        print("ready", flush=True)
        command, _, seconds = sys.stdin.readline().partition(" ")
        assert command == "go", command
        sections = contend_in_threads(
            [coordinator], name, pathlib.Path(history), pathlib.Path(counter),
            int(threads), float(seconds),
        )
    print(f"done {sections}", flush=True)


if __name__ == "__main__":
    from tests.aio.sync_view import install_in_worker

    install_in_worker()  # a test of the async API runs its workers through it too
    command, *arguments = sys.argv[1:]
    if command == "hold":
        _hold(*arguments)
    elif command == "join":
        _join(*arguments)
    elif command == "contend":
        _contend(*arguments)
    elif command == "elect":
        _elect(*arguments)
    elif command == "lead":
        _lead(*arguments)
    elif command == "share":
        name, history, seconds = arguments
        _take_turns(name, history, seconds, lambda c, shared: c.lock(name, shared=shared))
    elif command == "permit":
        name, limit, history, seconds = arguments
        _take_turns(name, history, seconds, lambda c, _: c.semaphore(name, int(limit)))
    else:
        sys.exit(f"unknown command {command!r}; see the module docstring")
