"""What a benchmarked lock library must offer, and what a server module declares.

A server module ``benchmarks/contenders/<server>.py`` provides:

* ``CONTENDERS``: the :class:`Contender` classes to compare, conch first;
* ``target()``: a context manager yielding the URL or directory every contender
  is given (starting a real server for the run when one is needed);
* optionally ``TARGETS`` (the :class:`Target` goals to check) and ``SETTINGS``
  (:class:`Settings` sized for the server's speed).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, Protocol


class LockLike(Protocol):
    """A lock as the harness drives it: a blocking acquire, then a release."""

    def acquire(self) -> object:
        """Wait until the lock is taken (the harness ignores the result)."""

    def release(self) -> object:
        """Free the lock."""


class Contender(abc.ABC):
    """One lock library under test, used by one process at a time.

    The harness creates it in the process that measures it, calls :meth:`setup`
    once, asks :meth:`lock` for the lock objects it needs, and calls
    :meth:`teardown` at the end. Nothing is shared between processes but ``target``.
    """

    name: ClassVar[str]
    """How results name it, e.g. ``"conch"`` or ``"fasteners"``; targets refer to it."""

    distribution: ClassVar[str] = ""
    """The installed distribution whose version the results record (``""``: none)."""

    floor: ClassVar[bool] = False
    """True for a reference that is not a library (the raw primitive the others build on)."""

    def __init__(self, target: str) -> None:
        """Remember ``target`` (a URL or a directory); do no I/O."""
        self.target = target

    def setup(self) -> None:  # noqa: B027 - most contenders need no set-up
        """Connect or start the library's session, in the process that will use it."""

    @abc.abstractmethod
    def lock(self, name: str) -> LockLike:
        """A lock object for ``name``, reused for every acquire of one measurement."""

    def teardown(self) -> None:  # noqa: B027 - most contenders need no tear-down
        """Disconnect (the process ends right after)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much each measurement does; a server module may size it to its speed."""

    iterations: int = 2_000
    """Uncontended acquire+release cycles timed (each block after a tenth as many untimed)."""
    handoff_rounds: int = 200
    """Hand-offs between two ping-pong processes (each block's first tenth not counted)."""
    blocks: int = 3
    """The uncontended and hand-off work is split into this many blocks, run in turn for
    every contender, so that a passing burst of load on the machine hits all alike."""
    hold_ms: tuple[float, float] = (1.0, 20.0)
    """Each hand-off's holder keeps the lock a uniformly drawn time in this range, so
    that a release falls at a random point of a polling waiter's sleep."""
    duration_s: float = 2.0
    """How long the processes hammer the lock in each contended run."""
    process_counts: tuple[int, ...] = (2, 4, 8)
    """Contended runs: how many processes hammer one name."""

    def quick(self) -> Settings:
        """A smoke run: about a tenth of the work."""
        return dataclasses.replace(
            self,
            iterations=max(200, self.iterations // 10),
            handoff_rounds=max(20, self.handoff_rounds // 10),
            duration_s=min(self.duration_s, 0.5),
        )


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal from the issue: ``contender``'s ``metric`` against a bound, checked in one run.

    With ``peer`` the bound is a ratio to the peer's figure measured in the same run;
    without, it is in the metric's own unit (µs, acquisitions/s). Metrics are named
    ``"uncontended p50"``, ``"handoff p99"``, ``"throughput 4"`` (4 processes) and so on.
    """

    text: str
    """The goal as the issue states it, for the report."""
    metric: str
    contender: str
    bound: float
    higher_is_better: bool = False
    peer: str | None = None
    peer_metric: str | None = None
    """The peer's figure the ratio divides by, when not ``metric`` (a PING's round-trip)."""
