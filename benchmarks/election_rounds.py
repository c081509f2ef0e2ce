"""Leadership hand-overs between processes, timed (``python -m benchmarks.elections``).

A round: one process leads; a freshly forked candidate sets up and campaigns; after a delay
the leader resigns (reading ``time.monotonic_ns()`` just before) or is SIGKILLed (the driver
reads the clock just before ``kill``); the candidate reads it as soon as it leads, and leads
the next round. ``CLOCK_MONOTONIC`` is one clock for the whole system on Linux.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

from benchmarks.election_contenders import Candidate
from benchmarks.harness import MeasurementFailed

_PIPE = multiprocessing.get_context("fork").Pipe
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclasses.dataclass
class HandOvers:
    """One driver's rounds."""

    durations_ns: list[int]
    """From the resignation or kill to the candidate leading, per round."""
    early: int
    """Rounds where the candidate led before the leader resigned or died (the leader's
    lease or session lapsed while it led): not in ``durations_ns``."""


class _Process:
    """A forked candidate and the driver's end of its pipe."""

    def __init__(self, pid: int, pipe: multiprocessing.connection.Connection) -> None:
        self.pid, self.pipe = pid, pipe
        self.ended = False

    def expect(self, kind: str, timeout: float) -> int:
        """The clock reading that came with the candidate's next message, which must be
        ``kind``; raises :class:`MeasurementFailed` otherwise or after ``timeout`` s."""
        if not self.pipe.poll(timeout):
            raise MeasurementFailed(f"no {kind!r} from process {self.pid} within {timeout:g} s")
        try:
            got, value = self.pipe.recv()
        except EOFError:
            raise MeasurementFailed(f"process {self.pid} ended before {kind!r}") from None
        if got != kind:
            raise MeasurementFailed(f"process {self.pid}: {got} (expected {kind!r}):\n{value}")
        return int(value)

    def end(self, kill: bool = False) -> None:
        """Reap the process, SIGKILLing it first with ``kill``."""
        if self.ended:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.ended = True


def hand_overs(candidate: type[Candidate], target: str, kill: bool,
               delays: Sequence[float], timeout: float) -> HandOvers:
    """One round per delay (s, from the candidate's campaign to the resignation or kill),
    each within ``timeout`` s, on an election of its own."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    processes: list[_Process] = []

    def fork() -> _Process:
        processes.append(_fork(candidate, target, name))
        return processes[-1]

    durations: list[int] = []
    early = 0
    try:
        leader = fork()
        leader.expect("campaigning", timeout)
        leader.expect("won", timeout)
        for delay in delays:
            challenger = fork()
            challenger.expect("campaigning", timeout)
            time.sleep(delay)
            if kill:
                ended = time.monotonic_ns()
                leader.end(kill=True)
            else:
                leader.pipe.send("resign")
                ended = leader.expect("resigned", timeout)
            won = challenger.expect("won", timeout)
            if not kill:
                leader.pipe.send("exit")
                leader.end()
            if won < ended:
                early += 1
            else:
                durations.append(won - ended)
            leader = challenger
        leader.pipe.send("resign")
        leader.expect("resigned", timeout)
        leader.pipe.send("exit")
        leader.end()
    finally:
        for process in processes:
            process.end(kill=True)
    return HandOvers(durations, early)


def _fork(candidate: type[Candidate], target: str, name: str) -> _Process:
    """A child that campaigns (:func:`_campaign`); it dies with this process."""
    ours, theirs = _PIPE()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == parent:  # else the driver died before prctl took effect
                _campaign(candidate(target), name, theirs)
                status = 0
        except BaseException:
            with contextlib.suppress(OSError):
                theirs.send(("failed", traceback.format_exc()))
        finally:
            os._exit(status)
    theirs.close()
    return _Process(pid, ours)


def _campaign(candidate: Candidate, name: str,
              pipe: multiprocessing.connection.Connection) -> None:
    """Set up, campaign, tell the driver when this process leads; resign on its word."""
    candidate.setup()
    resigned = 0

    def term() -> None:
        nonlocal resigned
        pipe.send(("won", time.monotonic_ns()))
        pipe.recv()  # "resign"
        resigned = time.monotonic_ns()

    pipe.send(("campaigning", time.monotonic_ns()))
    try:
        candidate.lead(name, term)
    except Exception:
        # A resignation after the term lapsed may raise (conch: LockLost); the driver
        # counts that round as early. Failing before leading is an error.
        if not resigned:
            raise
    pipe.send(("resigned", resigned))
    pipe.recv()  # "exit": tear down only once the round is timed
    candidate.teardown()


def outcome_or_error(job: Any) -> HandOvers | str:
    """``job()``, or the text of its failure (the concurrent drivers fail one by one)."""
    try:
        result: HandOvers = job()
    except MeasurementFailed as exc:
        return str(exc)
    except Exception:
        return traceback.format_exc()
    return result
