"""Starting real servers for tests: free loopback ports, temp data, stop by PID.

Each server module in this package builds on :class:`ServerProcess` and offers
pytest fixtures ``<backend>_server`` (session-wide) and ``<backend>_url``.
A missing binary skips the tests that need it, unless ``CONCH_REQUIRE_SERVERS``
is set (as in CI), where it fails them.

A port :func:`free_port` picks is free only until the server binds it: another
process (another test session, a client's ephemeral port) may take it first.
:meth:`ServerProcess.start_on_free_ports` then starts the server again on new ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

import pytest

ADDRESS_IN_USE = "address already in use"
"""``strerror(EADDRINUSE)``, lower-cased: what every server here logs when a port it binds
is taken. Seen by starting each on a port held by a socket: redis ``bind: Address already
in use``, memcached ``failed to listen on one of interface(s) 127.0.0.1: Address already in
use``, etcd ``listen tcp ...: bind: address already in use``, ZooKeeper
``java.net.BindException: Address already in use``, PostgreSQL ``could not bind IPv4 address
"127.0.0.1": Address already in use``, MariaDB ``Bind on TCP/IP port. Got error: 98: Address
already in use``. Each of them then exits."""

START_TRIES = 3
"""Starts on new ports :meth:`ServerProcess.start_on_free_ports` makes before giving up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens(pid: int, port: int) -> bool:
    """True when process ``pid`` holds a TCP socket listening on ``port`` (Linux ``/proc``)."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # Java listens on IPv6 sockets
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                # Columns: sl, local address:port (hex), remote, state (0A: LISTEN), ...
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    sockets.add(f"socket:[{fields[9]}]")
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):  # closed since listdir
            if os.readlink(os.path.join(fds, fd)) in sockets:
                return True
    return False


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


class PortTaken(RuntimeError):
    """The server could not bind a port: another process holds it (the server's log says so)."""


class _Exited(Exception):
    """The server process ended while it was starting."""


class ServerProcess:
    """One server process in the foreground of a child, so its PID is the server's own.

    It gets ``ports`` free ports (:attr:`ports`; :attr:`port` is the first, the one
    clients use), which the subclass puts in the server's command line or config.
    """

    def __init__(self, name: str, ready: Callable[[], bool], start_timeout: float = 30.0,
                 ports: int = 1) -> None:
        self.name = name
        self.ports = [free_port() for _ in range(ports)]
        self.data_dir = tempfile.mkdtemp(prefix=f"conch-{name}-")
        self._ready = ready
        self._start_timeout = start_timeout
        self._argv: Sequence[str] = ()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The port clients connect to (the first of :attr:`ports`)."""
        return self.ports[0]

    @property
    def pid(self) -> int:
        """The server's PID."""
        assert self._process is not None
        return self._process.pid

    def pick_ports(self) -> None:
        """Choose new free :attr:`ports` (before starting again, after one was taken)."""
        self.ports = [free_port() for _ in self.ports]

    def start_on_free_ports(self, command: Callable[[], Sequence[str]],
                            tries: int = START_TRIES) -> None:
        """First start: run ``command()``, the argv for the current :attr:`ports` (it may
        also write them into config files), and wait until the server answers. When
        another process took one of the ports first, pick new ones and start again, up
        to ``tries`` starts in all."""
        for attempt in range(1, tries + 1):
            try:
                self.start(command())
                return
            except PortTaken as exc:
                if attempt == tries:
                    raise RuntimeError(
                        f"{self.name}: another process took a port picked for it before it "
                        f"bound it, {tries} starts in a row; the last: {exc}") from None
            self.pick_ports()

    def start(self, argv: Sequence[str]) -> None:
        """Run ``argv`` and wait until the server answers on :attr:`port`, from a listening
        socket of its own (a process that took the port may answer too). Raises
        :class:`PortTaken` when the server could not bind a port, RuntimeError when it
        fails otherwise."""
        self._argv = argv
        with open(self._log_path, "ab") as log:
            log_start = log.seek(0, os.SEEK_END)
            self._process = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_until(self._answers, self._start_timeout, f"{self.name} (pid {self.pid})")
        except (TimeoutError, _Exited) as exc:
            failure = str(exc)
        else:
            # A cluster member may serve yet have failed to bind a port it needs later
            # (a ZooKeeper leader's quorum port): as unfit for the tests.
            if ADDRESS_IN_USE not in self._log_since(log_start).lower():
                return
            failure = f"{self.name} (pid {self.pid}) answers, but could not bind a port"
        self.stop()
        kind = PortTaken if ADDRESS_IN_USE in self._log_since(log_start).lower() else RuntimeError
        raise kind(f"{failure}; log:\n{self.log_tail(since=log_start)}")

    def _answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise _Exited(f"{self.name} exited with {self._process.returncode}")
        return self._ready() and listens(self.pid, self.port)

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

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def ensure_running(self) -> None:
        """Start the server again if a test left it stopped, thaw it if one left it paused
        (what a shared server's URL fixture does before each test)."""
        if self.running:
            self.resume()
        else:
            self.start(self._argv)
            self.after_restart()

    def after_restart(self) -> None:
        """What a server started again by :meth:`ensure_running` needs before tests use it."""

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        """The end of the server's log (from byte ``since`` on), for error messages."""
        return "".join(self._log_since(since).splitlines(keepends=True)[-lines:])

    def _log_since(self, offset: int) -> str:
        try:
            with open(self._log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    @property
    def _log_path(self) -> str:
        return os.path.join(self.data_dir, "server.log")

    def cleanup(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
