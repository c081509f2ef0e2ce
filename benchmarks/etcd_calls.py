"""etcd: the leases each contender of :mod:`benchmarks.contenders.etcd` leaves in etcd after
100 acquire/release cycles and its stop, and the etcd calls per acquisition of conch, tooz
and the FIFO queue floor with 2, 4 and 8 processes contending (counted from etcd's
``/metrics``). ``python -m benchmarks.etcd_calls`` prints both tables (markdown)."""

from __future__ import annotations

import multiprocessing
import re
import time
import urllib.request
import uuid
from collections import Counter
from typing import Any

from tests.servers.etcd import EtcdServer, start_etcd

from benchmarks.contenders.base import Contender
from benchmarks.contenders.common import Conch
from benchmarks.contenders.etcd import CONTENDERS, QueueFloor, Tooz

# Leases left behind -------------------------------------------------------------------


def _cycle_and_stop(contender_class: type[Contender], url: str, cycles: int) -> None:
    """In a child: ``cycles`` acquire/release cycles, then stop the library."""
    contender = contender_class(url)
    contender.setup()
    lock = contender.lock(f"leases-{uuid.uuid4().hex}")
    for _ in range(cycles):
        lock.acquire()
        lock.release()
    contender.teardown()


def leases_left(contender_class: type[Contender], server: EtcdServer, cycles: int) -> int:
    """How many more leases etcd holds after a process ran ``cycles`` cycles and stopped."""
    before = server.lease_ids()
    child = multiprocessing.get_context("fork").Process(
        target=_cycle_and_stop, args=(contender_class, f"etcd://{server.endpoint}", cycles))
    child.start()
    child.join()
    return len(server.lease_ids() - before)


# Requests per contended acquisition ----------------------------------------------------


def _started_calls(server: EtcdServer) -> Counter[str]:
    """How many calls of each gRPC method etcd has started (the gateway's included)."""
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    calls: Counter[str] = Counter()
    for method, value in re.findall(
            r'^grpc_server_started_total{[^}]*grpc_method="(\w+)"[^}]*} (\S+)$', text, re.M):
        calls[method] += int(float(value))
    return calls


def _loop(contender_class: type[Contender], url: str, name: str, seconds: float,
          counts: Any) -> None:
    """In a child: acquire and release ``name`` for ``seconds``; put the count."""
    contender = contender_class(url)
    contender.setup()
    lock = contender.lock(name)
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        lock.acquire()
        lock.release()
        done += 1
    contender.teardown()
    counts.put(done)


def requests_per_acquisition(contender_class: type[Contender], server: EtcdServer,
                             processes: int, seconds: float) -> tuple[int, Counter[str]]:
    """Acquisitions by ``processes`` processes looping on one name, and etcd's calls (by
    method) during the run, set-up and tear-down included."""
    context = multiprocessing.get_context("fork")
    counts = context.Queue()
    before = _started_calls(server)
    name = f"requests-{uuid.uuid4().hex}"
    children = [context.Process(target=_loop, args=(contender_class, f"etcd://{server.endpoint}",
                                                    name, seconds, counts))
                for _ in range(processes)]
    for child in children:
        child.start()
    acquisitions = sum(counts.get(timeout=seconds + 30) for _ in children)
    for child in children:
        child.join()
    return acquisitions, _started_calls(server) - before


def main() -> None:
    """Print the leases-left table and the requests per contended acquisition (markdown)."""
    cycles = 100
    print(f"| contender | leases left after {cycles} cycles and stop |")
    print("|---|--:|")
    server = start_etcd()
    try:
        for contender_class in CONTENDERS:
            print(f"| {contender_class.name} | {leases_left(contender_class, server, cycles)} |",
                  flush=True)
        print("\n| contender | processes | acquisitions | etcd calls per acquisition |")
        print("|---|--:|--:|---|")
        for contender_class in (Conch, Tooz, QueueFloor):
            for processes in (2, 4, 8):
                acquisitions, calls = requests_per_acquisition(contender_class, server,
                                                               processes, 3.0)
                each = ", ".join(f"{method} {count / acquisitions:.2f}"
                                 for method, count in calls.most_common())
                print(f"| {contender_class.name} | {processes} | {acquisitions} | "
                      f"{sum(calls.values()) / acquisitions:.2f} ({each}) |", flush=True)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
