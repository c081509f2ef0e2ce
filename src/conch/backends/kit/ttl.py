"""The session of servers that only expire keys (redis, memcached): one coordinator's holds,
renewed in one batch per beat (docs/kit.md, "The TTL session")."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from conch import metrics
from conch.backends.base import LossCallback
from conch.backends.kit.errors import Describe
from conch.backends.kit.session import Heartbeat, Holds
from conch.introspection import HolderStamp

log = logging.getLogger("conch")
K = TypeVar("K")


@dataclasses.dataclass(eq=False)
class TtlHold(Generic[K]):
    """A hold of ``keys`` with ``value``, alive until ``valid_until`` (monotonic) unless renewed."""

    keys: K
    value: bytes
    valid_until: float


RenewBatch = Callable[[list[TtlHold[K]], float], list[bool]]
"""Renew holds within the given seconds; per hold, True if it was still this hold's."""


def new_hold_value(stamp: HolderStamp) -> bytes:
    """A value no other hold ever has, then the hold's stamp (for ``conch show``)."""
    return secrets.token_hex(16).encode() + b" " + stamp.stamp()


class TtlSession(Generic[K]):
    """Holds renewed every ``lease / 3`` seconds by ``renew`` (``lease``: how long a renewal
    surely keeps a key); a ``failures`` exception loses the holds whose lease ends first."""

    def __init__(self, backend: str, lease: float, renew: RenewBatch[K],
                 describe: Describe, failures: tuple[type[BaseException], ...]) -> None:
        self.backend = backend
        self.lease = lease
        self.interval = lease / 3
        self.holds: Holds[TtlHold[K]] = Holds()
        self._renew, self._describe, self._failures = renew, describe, failures
        self._heartbeat: Heartbeat | None = None

    def start(self) -> None:
        self._heartbeat = Heartbeat(f"conch-{self.backend}-renewal", self.interval, self.beat)
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop renewing; every hold is reported lost (the coordinator stopped)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
        self.holds.lose_all("the coordinator was stopped")

    def keep(self, keys: K, value: bytes, sent: float, on_lost: LossCallback) -> TtlHold[K]:
        """Start renewing a hold acquired by a request sent at monotonic time ``sent``."""
        hold = TtlHold(keys, value, sent + self.lease)
        self.holds.add(hold, on_lost)
        return hold

    def discard(self, hold: TtlHold[K]) -> None:
        self.holds.discard(hold)

    def replace(self, previous: TtlHold[K] | None, keys: K, value: bytes,
                write: Callable[[], object], on_lost: LossCallback) -> TtlHold[K]:
        """Renew what ``write`` stores under ``keys`` instead of ``previous`` (not renewed
        during the write, so not reported lost; renewed again if ``write`` fails)."""
        if previous is not None:
            self.holds.discard(previous)
        sent = time.monotonic()
        try:
            write()
        except BaseException:
            if previous is not None:
                self.holds.add(previous, on_lost)
            raise
        return self.keep(keys, value, sent, on_lost)

    def beat(self) -> None:
        """Renew every hold in one batch; report those found gone, or about to expire."""
        holds = self.holds.snapshot()
        if not holds:
            return
        sent = time.monotonic()
        try:
            renewed = self._renew(holds, self.interval)
        except self._failures as exc:
            why = self._describe(exc)
            log.warning("renewing %d %s lock(s) failed: %s", len(holds), self.backend, why)
            metrics.record_renewals(self.backend, 0, len(holds))
            # The next renewal would come too late for these: the server frees them first.
            deadline = time.monotonic() + self.interval
            for hold in holds:
                if hold.valid_until <= deadline:
                    self.holds.lose(hold, f"renewals failed until its TTL ran out: {why}")
            return
        metrics.record_renewals(self.backend, sum(renewed))
        for hold, still_ours in zip(holds, renewed, strict=True):
            if still_ours:
                hold.valid_until = sent + self.lease
            else:
                self.holds.lose(hold, "its TTL ran out, it was broken (conch break), or "
                                "another holder took it")
