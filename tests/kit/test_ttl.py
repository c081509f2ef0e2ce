"""The TTL session's bookkeeping (redis and memcached run it against their servers in
tests/contract and tests/chaos): what a batch renewal's answer and failure mean."""

from __future__ import annotations

import time

import pytest

from conch.backends.kit.ttl import TtlHold, TtlSession, new_hold_value
from conch.introspection import HolderStamp


class _Server:
    """Answers renewals as a test says: per hold, or by failing."""

    def __init__(self) -> None:
        self.still_ours: dict[bytes, bool] = {}
        self.failure: OSError | None = None
        self.batches: list[int] = []

    def renew(self, holds: list[TtlHold[bytes]], within: float) -> list[bool]:
        self.batches.append(len(holds))
        if self.failure is not None:
            raise self.failure
        return [self.still_ours.get(hold.keys, True) for hold in holds]


def _session(server: _Server, lease: float = 3.0) -> TtlSession[bytes]:
    return TtlSession("test", lease, server.renew, lambda exc: f"down: {exc}", (OSError,))


def test_one_beat_renews_every_hold_in_one_batch_and_extends_them() -> None:
    server, lost = _Server(), list[str]()
    session = _session(server)
    holds = [session.keep(name, b"v", time.monotonic() - 2, lost.append)
             for name in (b"a", b"b", b"c")]
    session.beat()
    assert server.batches == [3] and lost == []
    assert all(hold.valid_until > time.monotonic() + 2.5 for hold in holds)


def test_a_hold_found_taken_is_reported_lost_once_and_no_longer_renewed() -> None:
    server, lost = _Server(), list[str]()
    session = _session(server)
    session.keep(b"a", b"v", time.monotonic(), lost.append)
    server.still_ours[b"a"] = False
    session.beat()
    session.beat()
    assert len(lost) == 1 and "another holder" in lost[0]
    assert server.batches == [1]


def test_failed_renewals_lose_a_hold_only_when_its_lease_would_end_before_the_next_beat() -> None:
    server = _Server()
    server.failure = OSError("connection refused")
    session = _session(server, lease=3.0)
    fresh, old = list[str](), list[str]()
    session.keep(b"fresh", b"v", time.monotonic(), fresh.append)
    session.keep(b"old", b"v", time.monotonic() - 2.5, old.append)
    session.beat()
    assert fresh == []
    assert old == ["renewals failed until its TTL ran out: down: connection refused"]


def test_stop_reports_every_hold_lost_and_discard_stops_tracking() -> None:
    server, lost = _Server(), list[str]()
    session = _session(server)
    released = session.keep(b"a", b"v", time.monotonic(), lost.append)
    session.keep(b"b", b"v", time.monotonic(), lost.append)
    session.discard(released)
    session.start()
    session.stop()
    assert lost == ["the coordinator was stopped"]


def test_hold_values_are_unique_and_end_in_the_holders_stamp() -> None:
    stamp = HolderStamp(b"vnf-42", "member-1")
    first, second = new_hold_value(stamp), new_hold_value(stamp)
    assert first != second
    assert first.split(b" ", 1)[1].startswith(b'{"')


def test_replace_renews_the_new_entry_and_a_renewal_crossing_it_loses_nothing() -> None:
    server, lost = _Server(), list[str]()
    session = _session(server)
    previous = session.keep(b"entry", b"old", time.monotonic(), lost.append)

    def write() -> None:  # the old value's renewal answers "not ours" once the new one is in
        server.still_ours[b"entry"] = False
        session.beat()
        server.still_ours[b"entry"] = True

    current = session.replace(previous, b"entry", b"new", write, lost.append)
    session.beat()
    assert lost == [] and current.value == b"new"
    assert session.holds.snapshot() == [current]


def test_replace_keeps_renewing_the_previous_entry_when_the_write_fails() -> None:
    server, lost = _Server(), list[str]()
    session = _session(server)
    previous = session.keep(b"entry", b"old", time.monotonic(), lost.append)

    def write() -> None:
        raise OSError("connection refused")

    with pytest.raises(OSError):
        session.replace(previous, b"entry", b"new", write, lost.append)
    assert session.holds.snapshot() == [previous] and lost == []
