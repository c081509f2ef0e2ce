"""``python -m tests.compat.tooz_leader GROUP``, with a tooz or conch URL in ``CONCH_URL``: a
member ``doomed-leader`` of the tooz facade runs its watchers until it leads ``GROUP``, prints
``leading <token>``, then sleeps until killed."""

from __future__ import annotations

import os
import sys
import time

from conch.compat.tooz import coordination


def lead(group: bytes) -> None:
    coordinator = coordination.get_coordinator(os.environ["CONCH_URL"], b"doomed-leader")
    coordinator.start()
    elected: list[coordination.LeaderElected] = []
    coordinator.watch_elected_as_leader(group, elected.append)
    while not elected:
        coordinator.run_watchers()
        time.sleep(0.05)
    election = elected[0].conch_election
    assert election is not None
    print(f"leading {election.token}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    lead(sys.argv[1].encode())
