"""``conch exec`` / ``conch elect``: run a command while holding a lock (like ``flock(1)``
across hosts) or while leading an election. The command gets the name and the fencing
token; the hold ends only after it exits, and a lost hold stops it. docs/cli.md has the
exit statuses (``EXIT_*``)."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from conch.coordinator import Coordinator
from conch.errors import BackendUnavailable, LockLost

EXIT_USAGE = 2
"""Bad arguments or URL: nothing ran."""
EXIT_UNAVAILABLE = 69
"""The backend cannot be reached (sysexits ``EX_UNAVAILABLE``): the command did not run."""
EXIT_LOCK_LOST = 70
"""The lock was lost while the command ran, so conch stopped it: its work may be partial.

Distinct from :data:`EXIT_UNAVAILABLE` and :data:`EXIT_NOT_ACQUIRED`, after which
the command never started and a retry is safe."""
EXIT_NOT_ACQUIRED = 75
"""The lock was not acquired within ``--timeout`` (sysexits ``EX_TEMPFAIL``): try later."""
EXIT_CANNOT_EXECUTE = 126
"""The command exists but could not be executed (as a shell reports it)."""
EXIT_NOT_FOUND = 127
"""The command was not found (as a shell reports it)."""

DEFAULT_GRACE = 10.0
"""Seconds between ``SIGTERM`` and ``SIGKILL`` when the lock is lost."""

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How often the loss watcher checks whether the command already ended. A loss
# itself wakes it at once (it waits on lock.lost); this only bounds how long the
# watcher thread outlives a command that ended normally.
_WATCHER_EXIT_PERIOD = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_locked(coordinator: Coordinator, name: str, argv: Sequence[str],
               timeout: float | None = None, grace: float = DEFAULT_GRACE) -> int:
    """Run ``argv`` while holding lock ``name``; return the exit status to report.

    ``timeout`` is the longest wait for the lock in seconds (``None``: forever,
    ``0``: one try). When the lock is lost while the command runs, it gets
    ``SIGTERM``, then ``SIGKILL`` after ``grace`` seconds, and the result is
    :data:`EXIT_LOCK_LOST`. Called from the main thread, ``SIGINT``, ``SIGTERM``
    and ``SIGHUP`` sent to this process are passed on to the command. Messages go
    to ``sys.stderr`` as single lines. Raises :class:`conch.BackendUnavailable`
    when the backend cannot be reached before the command starts.
    """
    lock = coordinator.lock(name)
    return _run_holding(_Holding(f"lock {name!r}", lock.acquire, lock.release, lock.lost,
                                 lambda: lock.token, "CONCH_LOCK_NAME", "CONCH_LOCK_TOKEN"),
                        name, argv, timeout, grace)


def run_leading(coordinator: Coordinator, name: str, argv: Sequence[str],
                timeout: float | None = None, grace: float = DEFAULT_GRACE) -> int:
    """As :func:`run_locked`, while leading election ``name``: the command gets
    ``CONCH_ELECTION`` and ``CONCH_LEADER_TOKEN``, and is stopped when leadership is lost."""
    election = coordinator.election(name)
    return _run_holding(_Holding(f"leadership of {name!r}", election.campaign,
                                 election.resign, election.lost, lambda: election.token,
                                 "CONCH_ELECTION", "CONCH_LEADER_TOKEN"),
                        name, argv, timeout, grace)


@dataclasses.dataclass(frozen=True)
class _Holding:
    """What the command runs under: a lock, or leadership."""

    what: str
    take: Callable[[bool | float], bool]
    give_back: Callable[[], None]
    lost: threading.Event
    token: Callable[[], int | None]
    name_variable: str
    token_variable: str


def _run_holding(holding: _Holding, name: str, argv: Sequence[str], timeout: float | None,
                 grace: float) -> int:
    if not argv:
        raise ValueError("conch exec needs a command to run")
    if not holding.take(True if timeout is None else timeout):
        waited = "at once" if timeout == 0 else f"within {timeout:g} s"
        _say(f"{holding.what} not acquired {waited}: it is held elsewhere")
        return EXIT_NOT_ACQUIRED
    env = {**os.environ, holding.name_variable: name,
           holding.token_variable: str(holding.token())}
    try:
        status = _run_while_held(holding.lost, holding.what, argv, env, grace)
    finally:
        kept = _release(holding)
    if not kept:
        _say(f"{holding.what} was lost while the command ran (exit status {EXIT_LOCK_LOST})")
        return EXIT_LOCK_LOST
    return status


def _release(holding: _Holding) -> bool:
    """Give the hold back; False when it had been lost (even after the command ended,
    as its last moments may then have run unprotected)."""
    try:
        holding.give_back()
    except LockLost:
        return False
    except BackendUnavailable as exc:
        # The command finished under the lock; the session's end frees it anyway.
        _say(f"warning: releasing {holding.what} failed: {exc}")
    return True


def _run_while_held(
    lost: threading.Event, what: str, argv: Sequence[str], env: dict[str, str], grace: float
) -> int:
    try:
        command = _Command(argv, env)
    except FileNotFoundError:
        _say(f"cannot run {argv[0]!r}: command not found")
        return EXIT_NOT_FOUND
    except OSError as exc:
        _say(f"cannot run {argv[0]!r}: {exc.strerror}")
        return EXIT_CANNOT_EXECUTE
    ended = threading.Event()
    watcher = threading.Thread(
        target=_stop_on_loss, args=(lost, ended, command, what, grace),
        name=f"conch-exec-watch-{command.pid}", daemon=True,
    )
    watcher.start()
    try:
        with _forwarding_signals(command):
            returncode = command.wait()
    finally:
        ended.set()
    return 128 - returncode if returncode < 0 else returncode


class _Command:
    """The command's process, and how to signal all of it.

    Run from a terminal's foreground, it shares conch's process group so it can
    use the terminal (and Ctrl-C reaches it directly). Otherwise (cron, CI,
    services) it leads a process group of its own, so a signal reaches whatever
    it started too, and nothing it left behind keeps running once the lock is lost.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.shares_terminal = _in_terminal_foreground()
        self._process = subprocess.Popen(argv, env=env, preexec_fn=self._preparation())
        self.pid = self._process.pid

    def wait(self) -> int:
        """Wait for the command to exit; its return code (``-N`` when signal N ended it)."""
        return self._process.wait()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the command (and its process group when it has its own)."""
        if self.shares_terminal:
            self._process.send_signal(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited
            os.killpg(self.pid, signum)

    def _preparation(self) -> Callable[[], None]:
        """What the child does between fork and exec: only system calls, as threads may run.

        On Linux the kernel sends it ``SIGKILL`` should conch die first (``PR_SET_PDEATHSIG``:
        it fires when the forking thread ends, and that thread waits for the command), so
        even a ``kill -9`` of conch cannot leave the command running without the lock.
        """
        own_group = not self.shares_terminal
        prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
        parent = os.getpid()
        kill = int(signal.SIGKILL)

        def prepare() -> None:
            if own_group:
                os.setpgid(0, 0)
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, kill)
                if os.getppid() != parent:  # conch died before prctl took effect
                    os.kill(os.getpid(), kill)

        return prepare


def _stop_on_loss(
    lost: threading.Event, ended: threading.Event, command: _Command, what: str, grace: float
) -> None:
    """Terminate ``command`` once ``lost`` is set, killing it after ``grace`` seconds."""
    while not lost.wait(_WATCHER_EXIT_PERIOD):
        if ended.is_set():
            return
    if ended.is_set():
        return
    _say(f"{what} was lost: stopping the command (pid {command.pid}) with SIGTERM")
    command.signal(signal.SIGTERM)
    if not ended.wait(grace):
        _say(f"the command (pid {command.pid}) outlived SIGTERM by {grace:g} s: sending SIGKILL")
        command.signal(signal.SIGKILL)


@contextlib.contextmanager
def _forwarding_signals(command: _Command) -> Iterator[None]:
    """Pass ``SIGINT``/``SIGTERM``/``SIGHUP`` sent to conch on to ``command`` (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        # Ctrl-C reaches the terminal's whole foreground process group, the command
        # included; forwarding it too would interrupt the command twice (the problem
        # uv solved with the same terminal check: astral-sh/uv#13925).
        if signum != signal.SIGINT or not command.shares_terminal:
            command.signal(signum)

    # A signal ignored when conch started (SIGINT for a background job of a
    # non-interactive shell) stays ignored, as the command inherited that too.
    previous = {
        signum: signal.signal(signum, forward)
        for signum in _FORWARDED
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _in_terminal_foreground() -> bool:
    """True when this process is in the foreground process group of its terminal."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
    return False


def _say(message: str) -> None:
    print(f"conch: {message}", file=sys.stderr, flush=True)
