"""Starting real servers for tests: free loopback ports, temp data, stop by PID.

Each server module in this package builds on :class:`ServerProcess` and offers
pytest fixtures ``<backend>_server`` (session-wide) and ``<backend>_url``.
A missing binary skips the tests that need it, unless ``CONCH_REQUIRE_SERVERS``
is set (as in CI), where it fails them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(path: str, package: str) -> str:
    """``path`` if it is installed; else skip (or fail under ``CONCH_REQUIRE_SERVERS``)."""
    found = shutil.which(path)
    if found:
        return found
    reason = f"{path} is not installed (Debian package {package}); scripts/test installs it"
    if os.environ.get("CONCH_REQUIRE_SERVERS"):
        pytest.fail(f"CONCH_REQUIRE_SERVERS is set but {reason}", pytrace=False)
    pytest.skip(reason)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it returns True; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout} s")


class ServerProcess:
    """One server process in the foreground of a child, so its PID is the server's own."""

    def __init__(self, name: str, ready: Callable[[], bool], start_timeout: float = 30.0) -> None:
        self.name = name
        self.data_dir = tempfile.mkdtemp(prefix=f"conch-{name}-")
        self._ready = ready
        self._start_timeout = start_timeout
        self._argv: Sequence[str] = ()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's PID."""
        assert self._process is not None
        return self._process.pid

    def start(self, argv: Sequence[str], **popen: object) -> None:
        """Run ``argv`` and wait until the server answers."""
        self._argv = argv
        log = open(os.path.join(self.data_dir, "server.log"), "ab")  # noqa: SIM115
        self._process = subprocess.Popen(  # type: ignore[call-overload]
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )
        log.close()
        try:
            wait_until(self._answers, self._start_timeout, f"{self.name} (pid {self.pid})")
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; log:\n{self.log_tail()}") from None

    def _answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self._process.returncode}:\n"
                               f"{self.log_tail()}")
        return self._ready()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the server by PID (SIGKILL if it does not exit within ``timeout``)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """SIGKILL the server (a crash)."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start the server again with the same arguments and data."""
        argv = self._argv
        self.stop()
        self.start(argv)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            with open(os.path.join(self.data_dir, "server.log"), errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
