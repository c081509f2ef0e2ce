"""Lock users in processes of their own, which the chaos scenarios kill, freeze and cut off.

Run as ``python -m tests.chaos.worker <command> HOLDER HISTORY STORE ...`` from the
repository root, with the backend URL in ``CONCH_URL`` (``ps`` shows argv, and
URLs carry passwords); with ``CONCH_CHAOS_LOG`` set, every log record of INFO and
above goes to that file (the scenario greps it for the password).

Every critical section is recorded in ``HISTORY`` (:class:`conch.history.Recorder`
files) from the return of ``acquire`` to the call of ``release``, with ``lost``
set when the holder was told of a loss by the end of the release, a release
raising :class:`conch.LockLost` included. Inside it the holder updates the
fenced counter of the lock's name in the :class:`~tests.chaos.store.FencedStore`
``STORE``: read with its token, work, write ``read + 1``.

``script NAME``
    Connect, print ``ready``, then obey one command per stdin line and answer each
    with one line: ``acquire SECONDS|forever`` (``acquired TOKEN`` / ``refused``),
    ``read`` (``read VALUE`` / ``rejected``), ``write`` (``accepted`` / ``rejected``),
    ``wait-lost SECONDS`` (``lost WHEN``, the monotonic time the wait ended, /
    ``not-lost``), ``release`` (``released`` / ``lost``), ``join-group GROUP`` (``joined``),
    ``wait-group-lost GROUP SECONDS`` (``group-lost WHEN`` / ``group-not-lost``),
    ``exit``. A conch error answers ``error TYPE: MESSAGE``.
``contend SECONDS HOLD NAME...``
    Print ``ready``, wait for ``go`` on stdin, then for SECONDS take a random NAME
    at a time (waiting at most 5 s) and update its counter, holding the lock up to
    HOLD seconds; conch errors are counted and the loop goes on. Prints ``done
    JSON``, a :class:`Tally`.

The parent side is :mod:`tests.chaos.driver`.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import os
import random
import signal
import sys
import threading
import time

import conch
from conch.election import KEY_PREFIX
from conch.history import Recorder, Section
from tests.chaos.store import FencedStore, Rejected

LOG_ENV = "CONCH_CHAOS_LOG"
ELECTION_PREFIX = KEY_PREFIX
"""A scenario name starting with this drives an election, not a lock."""
PERMIT_PREFIX = "permit:"
"""A scenario name starting with this drives permits of a semaphore of limit 1."""
GROUP_ENV = "CONCH_CHAOS_GROUP"
"""When set, a ``contend`` worker joins the group it names before contending."""
WAIT_LIMIT = 5.0
"""Seconds a contending worker waits for one lock before it picks another name."""


@dataclasses.dataclass
class Tally:
    """What one contending worker did."""

    acquisitions: int = 0
    timeouts: int = 0
    errors: int = 0
    losses_reported: int = 0
    fenced_out: int = 0
    max_wait: float = 0.0


class Term:
    """An election driven as a lock (campaign, resign), so that the scenarios run leaders
    as they run lock holders: each term is a section."""

    def __init__(self, election: conch.Election) -> None:
        self.election = election
        self.name = ELECTION_PREFIX + str(election.name)

    @property
    def token(self) -> int | None:
        return self.election.token

    @property
    def lost(self) -> threading.Event:
        return self.election.lost

    @property
    def held(self) -> bool:
        return self.election.is_leader

    def acquire(self, blocking: bool | float) -> bool:
        return self.election.campaign(blocking)

    def release(self) -> None:
        self.election.resign()


def held_by_name(coordinator: conch.Coordinator, name: str
                 ) -> conch.Lock | conch.Semaphore | Term:
    """The lock ``name``, or the election it names (``conch-election:<election>``), or a
    permit of the semaphore of limit 1 it names (``permit:<semaphore>``)."""
    if name.startswith(ELECTION_PREFIX):
        return Term(coordinator.election(name.removeprefix(ELECTION_PREFIX)))
    if name.startswith(PERMIT_PREFIX):
        return coordinator.semaphore(name.removeprefix(PERMIT_PREFIX), 1)
    return coordinator.lock(name)


class Holder:
    """One lock object (or election) and the record of its sections: acquire, update,
    release."""

    def __init__(self, lock: conch.Lock | conch.Semaphore | Term, holder: str,
                 recorder: Recorder,
                 store: FencedStore) -> None:
        self.lock = lock
        self.holder = holder
        name = lock.name if isinstance(lock.name, str) else lock.name.decode()
        self.name = PERMIT_PREFIX + name if isinstance(lock, conch.Semaphore) else name
        self._recorder = recorder
        self._store = store
        self._entered = 0.0
        self._token: int | None = None
        self._read: int | None = None

    def acquire(self, blocking: bool | float) -> int | None:
        """Take the lock; its token, or None when not acquired (or lost at once)."""
        if not self.lock.acquire(blocking):
            return None
        self._entered = time.monotonic()
        self._token, self._read = self.lock.token, None
        if self._token is None:  # lost while acquiring: no hold to work under
            self.release()
            return None
        return self._token

    def read(self) -> int:
        """Read the counter with the hold's token (raise Rejected)."""
        assert self._token is not None
        self._read = self._store.read(self.name, self.holder, self._token)
        return self._read

    def write(self) -> None:
        """Write the value read plus one with the hold's token (raise Rejected)."""
        assert self._token is not None and self._read is not None
        self._store.write(self.name, self.holder, self._token, self._read)

    def release(self) -> bool:
        """Release and record the section; True when the holder was told of a loss.

        The section ends when ``release()`` is called (the server may grant the lock
        to the next holder before the release returns); a loss it reports counts.
        """
        left = time.monotonic()
        try:
            self.lock.release()
        except conch.LockLost:
            pass
        finally:
            if self._token is not None:
                self._recorder.add(Section(self.name, self.holder, self._token, self._entered,
                                           left, self.lock.lost.is_set()))
            self._token = None
        return self.lock.lost.is_set()


def contend(coordinator: conch.Coordinator, holder: str, names: list[str], recorder: Recorder,
            store: FencedStore, seconds: float, hold: float) -> Tally:
    """Update the counters of random ``names`` under their locks for ``seconds``, holding
    each lock up to ``hold`` seconds."""
    tally = Tally()
    locks = {name: Holder(held_by_name(coordinator, name), holder, recorder, store)
             for name in names}
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        current = locks[random.choice(names)]
        started = time.monotonic()
        try:
            token = current.acquire(WAIT_LIMIT)
        except conch.ConchError:
            tally.errors += 1
            time.sleep(0.1)
            continue
        tally.max_wait = max(tally.max_wait, time.monotonic() - started)
        if token is None:
            tally.timeouts += 1
            continue
        tally.acquisitions += 1
        try:
            current.read()
            time.sleep(random.uniform(0, hold))
            current.write()
        except Rejected:
            tally.fenced_out += 1
        try:
            tally.losses_reported += current.release()
        except conch.ConchError:
            tally.errors += 1
    return tally


def _script(holder: Holder, coordinator: conch.Coordinator) -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        try:
            answer = _obey(holder, command, argument) if "group" not in command \
                else _obey_group(coordinator, command, argument)
        except Rejected:
            answer = "rejected"
        except conch.ConchError as exc:
            answer = f"error {type(exc).__name__}: {exc}"
        if answer == "exit":
            return
        print(answer, flush=True)


def _obey(holder: Holder, command: str, argument: str) -> str:
    if command == "acquire":
        token = holder.acquire(True if argument == "forever" else float(argument))
        return "refused" if token is None else f"acquired {token}"
    if command == "read":
        return f"read {holder.read()}"
    if command == "write":
        holder.write()
        return "accepted"
    if command == "wait-lost":
        if holder.lock.lost.wait(float(argument)):
            return f"lost {time.monotonic()!r}"
        return "not-lost"
    if command == "release":
        return "lost" if holder.release() else "released"
    if command == "exit":
        return "exit"
    return f"error unknown command {command!r}"


def _obey_group(coordinator: conch.Coordinator, command: str, argument: str) -> str:
    if command == "join-group":
        coordinator.group(argument).join({"pid": os.getpid()})
        return "joined"
    if command == "wait-group-lost":
        group, _, seconds = argument.partition(" ")
        if coordinator.group(group).lost.wait(float(seconds)):
            return f"group-lost {time.monotonic()!r}"
        return "group-not-lost"
    return f"error unknown command {command!r}"


def main(argv: list[str]) -> None:
    """Run one worker command (see the module docstring)."""
    command, holder, history, store_dir, *rest = argv
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if os.environ.get(LOG_ENV):
        # INFO: what conch reports (losses, failures, with their causes), and what the
        # client libraries say above their debugging chatter.
        logging.basicConfig(filename=os.environ[LOG_ENV], level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    recorder = Recorder(history, holder)
    store = FencedStore(store_dir)
    with conch.connect(member_id=holder) as coordinator:
        if command == "script":
            _script(Holder(held_by_name(coordinator, rest[0]), holder, recorder, store),
                    coordinator)
        elif command == "contend":
            seconds, hold, *names = rest
            if os.environ.get(GROUP_ENV):
                coordinator.group(os.environ[GROUP_ENV]).join({"holder": holder})
            print("ready", flush=True)
            sys.stdin.readline()
            tally = contend(coordinator, holder, names, recorder, store, float(seconds),
                            float(hold))
            print(f"done {json.dumps(dataclasses.asdict(tally))}", flush=True)
        else:
            sys.exit(f"unknown command {command!r}; see the module docstring")


if __name__ == "__main__":
    main(sys.argv[1:])
