"""The shared resource the chaos scenarios protect: counters that check fencing tokens.

It plays the storage service of the fencing-token pattern: every request carries
the token of the caller's hold, and the store refuses a request whose token is
below the largest it has seen for that counter, so a holder that lost its lock
unawares (frozen, cut off) cannot overwrite the work of the holder after it.
The counter update itself is deliberately *not* atomic: a holder reads, works,
then writes ``read + 1`` in a second request, so two holders at once would lose
an update, and :func:`conch.history.fenced_counter_violations` finds it in the
log of write attempts the store keeps.

Any process of the host may use one store directory; each request is atomic
(``flock`` on the counter's file), as a real storage service's would be.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager

from conch.history import FencedWrite, load_writes


class Rejected(Exception):
    """The store saw a larger token for this counter: the caller's hold is stale."""


class FencedStore:
    """Fenced counters in ``directory``, one file per name; the write log is ``writes.jsonl``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "writes.jsonl"

    def read(self, name: str, holder: str, token: int) -> int:
        """The counter of ``name``; raise :class:`Rejected` when a larger token came first
        (the refusal is logged as a rejected attempt that read ``-1``).

        A read, too, raises the counter's token mark: once a new holder has read,
        a stale holder's write can no longer slip in before the new holder's.
        """
        with self._counter(name) as state:
            if token >= state["token"]:
                state["token"] = token
                return int(state["value"])
            self._log(FencedWrite(name=name, holder=holder, token=token, read=-1,
                                  accepted=False))
            raise Rejected(f"token {token} < {state['token']}")

    def write(self, name: str, holder: str, token: int, read: int) -> None:
        """Store ``read + 1`` as the counter of ``name`` unless a larger token came first
        (then raise :class:`Rejected`); the attempt is logged either way."""
        with self._counter(name) as state:
            accepted = token >= state["token"]
            if accepted:
                state["token"] = token
                state["value"] = read + 1
            self._log(FencedWrite(name=name, holder=holder, token=token, read=read,
                                  accepted=accepted))
        if not accepted:
            raise Rejected(f"token {token} < {state['token']}")

    def _log(self, attempt: FencedWrite) -> None:
        with self.log.open("a", encoding="utf-8") as out:
            out.write(json.dumps(dataclasses.asdict(attempt)) + "\n")

    def writes(self) -> list[FencedWrite]:
        """Every write attempt so far, in the order the store decided them."""
        return load_writes(self.log)

    def value(self, name: str) -> int:
        """The counter of ``name`` now (for the test's own checks)."""
        with self._counter(name) as state:
            return int(state["value"])

    @contextmanager
    def _counter(self, name: str) -> Iterator[dict[str, int]]:
        path = self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # also orders the log lines of this counter
            raw = os.pread(fd, 4096, 0)
            state: dict[str, int] = json.loads(raw) if raw else {"value": 0, "token": -1}
            before = dict(state)
            yield state
            if state != before:
                encoded = json.dumps(state).encode()
                os.pwrite(fd, encoded.ljust(len(raw)), 0)
        finally:
            os.close(fd)
