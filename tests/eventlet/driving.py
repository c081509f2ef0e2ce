"""The test side of :mod:`tests.eventlet.green_worker`: start one, ask it, read its answers."""

from __future__ import annotations

import queue
import threading
from typing import NamedTuple

from tests.contract import workers

MODULE = "tests.eventlet.green_worker"
ANSWER_WITHIN = 30.0
"""Seconds any answer may take (the longest wait asked for is a dead holder's lease)."""


class Acquired(NamedTuple):
    """The answer to ``acquire``: its result, when it returned (monotonic), how long it
    waited, the ticker's longest gap meanwhile, and the token (``None``: not acquired)."""

    result: bool
    at: float
    elapsed: float
    gap: float
    token: int | None

    @classmethod
    def parse(cls, words: list[str]) -> Acquired:
        result, at, elapsed, gap, token = words
        return cls(result == "True", float(at), float(elapsed), float(gap),
                   None if token == "None" else int(token))


class GreenWorker:
    """A ``green_worker`` process; its output lines are read by a thread of their own, so
    answers written by two green threads at once are never lost in a buffer."""

    def __init__(self, url: str, command: str = "serve") -> None:
        self.process = workers.spawn(url, command, module=MODULE)
        self._lines: queue.Queue[str] = queue.Queue()
        self._unclaimed: list[str] = []
        self.holding_id = self.waiting_id = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self.process.stdout.close()
        self._lines.put("")  # end of output

    def ready(self) -> None:
        """Wait for ``ready``; note its coordinators' member ids (``serve`` says them)."""
        self.holding_id, self.waiting_id = self.expect("ready")

    def expect(self, word: str, timeout: float = ANSWER_WITHIN) -> list[str]:
        """The words after ``word`` of its next line starting with ``word`` (lines that
        start otherwise wait for their own ``expect``)."""
        for line in self._unclaimed:
            if line.split()[0] == word:
                self._unclaimed.remove(line)
                return line.split()[1:]
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(self._failure(f"no {word!r} within {timeout} s")) from None
            if not line:
                raise AssertionError(self._failure(f"it ended before saying {word!r}"))
            if line.split()[0] == word:
                return line.split()[1:]
            self._unclaimed.append(line)

    def ask(self, command: str, answer: str) -> list[str]:
        """Send ``command``; the words of the answer starting with ``answer``."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.expect(answer)

    def kill(self) -> None:
        """SIGKILL it (no clean-up code runs) and wait until it is gone."""
        self.process.kill()
        self.process.wait()

    def finish(self, timeout: float) -> list[str]:
        """Wait for it to end (at most ``timeout`` seconds); every line it said not yet
        claimed. Fails, with its error output, unless it exited with 0."""
        said = list(self._unclaimed)
        while (line := self._lines.get(timeout=timeout)):
            said.append(line)
        if self.process.wait(timeout) != 0:
            raise AssertionError(self._failure(f"exit status {self.process.returncode}"))
        return said

    def close(self) -> None:
        """SIGKILL it if still running, and close its pipes."""
        self.kill()
        for pipe in (self.process.stdin, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def _failure(self, what: str) -> str:
        self.process.kill()
        assert self.process.stderr is not None
        return f"green worker: {what}; stderr:\n{self.process.stderr.read()}"
