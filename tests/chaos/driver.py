"""The parent side of :mod:`tests.chaos.worker`: start worker processes and talk to them."""

from __future__ import annotations

import os
import pathlib
import select
import signal
import subprocess
import sys
import time
import weakref

from tests.chaos.worker import LOG_ENV

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def spawn(url: str, *argv: str, log: pathlib.Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m tests.chaos.worker argv...`` on ``url``, logging to ``log``."""
    env = {**os.environ, "CONCH_URL": url}
    if log is not None:
        env[LOG_ENV] = str(log)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.worker", *argv],
        cwd=REPOSITORY, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# Bytes read from a worker's stdout beyond its last line. Reading the pipe's file
# descriptor directly: a buffered reader may take two lines at once, and then select()
# would wait for a second line it already holds.
_unread: weakref.WeakKeyDictionary[subprocess.Popen[str], bytearray] = \
    weakref.WeakKeyDictionary()


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The worker's next line ('' when none came within ``timeout`` or it exited)."""
    assert process.stdout is not None
    unread = _unread.setdefault(process, bytearray())
    deadline = time.monotonic() + timeout
    while b"\n" not in unread:
        ready, _, _ = select.select([process.stdout], [], [],
                                    max(0.0, deadline - time.monotonic()))
        chunk = os.read(process.stdout.fileno(), 65536) if ready else b""
        if not chunk:  # no line in time, or the end of the output
            return ""
        unread += chunk
    line, _, rest = bytes(unread).partition(b"\n")
    unread[:] = rest
    return line.decode(errors="replace").strip()


class Scripted:
    """A ``script`` worker: one process holding one lock object, driven line by line."""

    def __init__(self, url: str, holder: str, history: pathlib.Path, store: pathlib.Path,
                 name: str, log: pathlib.Path | None = None) -> None:
        self.holder = holder
        self.process = spawn(url, "script", holder, str(history), str(store), name, log=log)
        self.expect("ready", timeout=30)

    @property
    def pid(self) -> int:
        """The worker's PID."""
        return self.process.pid

    def ask(self, command: str, timeout: float = 30) -> str:
        """Send ``command``; its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer(timeout)

    def answer(self, timeout: float = 30) -> str:
        """The next answer (fails after ``timeout`` seconds or if the worker died, showing
        the worker's stderr and, if it hung, the stacks of its threads)."""
        line = read_line(self.process, timeout)
        if not line:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGUSR1)  # faulthandler: dump the stacks
                time.sleep(0.5)
                self.process.kill()
            raise AssertionError(f"worker {self.holder} gave no answer in {timeout} s; "
                                 f"stderr:\n{self._errors()}")
        return line

    def expect(self, word: str, timeout: float = 30) -> str:
        """The next answer, which must start with ``word``; the rest of it."""
        line = self.answer(timeout)
        assert line.startswith(word), f"worker {self.holder} said {line!r}, not {word!r}"
        return line[len(word):].strip()

    def send(self, command: str) -> None:
        """Send ``command`` without waiting for its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self) -> str:
        """Kill the worker if still running and reap it; what it wrote to stderr."""
        if self.process.poll() is None:
            os.kill(self.process.pid, 9)
        return self.process.communicate()[1]

    def _errors(self) -> str:
        self.process.wait()
        assert self.process.stderr is not None
        return self.process.stderr.read()


