"""Loopback TCP connections of local processes, found through ``/proc``, and cutting them.

A test cuts connections that pass no proxy (a ZooKeeper member connecting back to
another's real election port) with ``ss -K`` (needs ``CAP_NET_ADMIN``) or, failing
that, by shutting the socket down through a duplicate of the owner's descriptor
(``pidfd_getfd``, needs the right to trace the owner: the test process started it).
Neither is trusted: :func:`cut` looks again and says what is still connected.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import socket
import subprocess
import threading
from collections.abc import Collection, Iterable, Mapping

_ESTABLISHED = "01"
_RECHECK = 0.1  # seconds between two looks for new direct connections
_SYS_PIDFD_GETFD = 438  # the same number on every architecture (asm-generic table)


@dataclasses.dataclass(frozen=True)
class Connection:
    """One established TCP socket of process ``pid`` (descriptor ``fd``)."""

    pid: int
    fd: int
    local_port: int
    remote_port: int


def _rows(established_only: bool) -> Iterable[tuple[str, int, int]]:
    """``(inode, local port, remote port)`` of each TCP socket on this host.

    ``/proc/net/tcp{,6}``: "sl local_address rem_address st ... uid timeout inode",
    an address being hex IP:hex port. Java and Go may use IPv6 sockets (v4-mapped).
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if established_only and fields[3] != _ESTABLISHED:
                    continue
                yield (fields[9], int(fields[1].rsplit(":", 1)[1], 16),
                       int(fields[2].rsplit(":", 1)[1], 16))


def _socket_fds(pid: int) -> dict[str, int]:
    """``socket:[inode]`` → descriptor, for the sockets process ``pid`` has open."""
    found: dict[str, int] = {}
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{fd_dir}/{fd}")
                if target.startswith("socket:["):
                    found[target] = int(fd)
    return found


def connections(pids: Collection[int]) -> list[Connection]:
    """The established TCP connections of processes ``pids``."""
    owners = {inode: (pid, fd) for pid in pids for inode, fd in _socket_fds(pid).items()}
    found = []
    for inode, local, remote in _rows(established_only=True):
        owner = owners.get(f"socket:[{inode}]")
        if owner is not None:
            found.append(Connection(owner[0], owner[1], local, remote))
    return found


def connecting_pid(accepted: socket.socket, candidates: Collection[int]) -> int | None:
    """Which of ``candidates`` opened the loopback connection ``accepted`` (None: another)."""
    try:
        client_port = accepted.getpeername()[1]
        proxy_port = accepted.getsockname()[1]
    except OSError:
        return None
    for inode, local, remote in _rows(established_only=False):
        if local == client_port and remote == proxy_port:
            wanted = f"socket:[{inode}]"
            return next((pid for pid in candidates if wanted in _socket_fds(pid)), None)
    return None


def cut(links: Collection[Connection], pids: Collection[int]) -> list[str]:
    """Close ``links`` (connections of ``pids``) at both ends; return what failed, with
    why, for each link still connected afterwards (empty: all cut)."""
    if not links:
        return []
    reasons = []
    pairs = " or ".join(f"( sport = :{link.local_port} and dport = :{link.remote_port} )"
                        for link in links)
    killed = subprocess.run(["ss", "-K", "-t", "state", "established", f"( {pairs} )"],
                            capture_output=True, text=True, check=False)
    if killed.stderr.strip():  # e.g. "SOCK_DESTROY answers: Operation not permitted" (rc 0)
        reasons.append(f"ss -K: {killed.stderr.strip()}")
    for link in _still_connected(links, pids):
        try:
            _shut_down(link)
        except OSError as exc:
            reasons.append(f"pidfd_getfd on {link}: {exc}")
    left = _still_connected(links, pids)
    return [f"{link} still connected ({'; '.join(reasons)})" for link in left]


def _still_connected(links: Collection[Connection], pids: Collection[int]) -> list[Connection]:
    now = set(connections(pids))
    return [link for link in links if link in now]


def _shut_down(link: Connection) -> None:
    """Shut ``link``'s socket down inside its owner, through a duplicate descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(link.pid)
    try:
        duplicate = libc.syscall(_SYS_PIDFD_GETFD, pidfd, link.fd, 0)
        if duplicate < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        with socket.socket(fileno=duplicate) as sock:
            sock.shutdown(socket.SHUT_RDWR)  # the socket is shared: the owner sees it end
    finally:
        os.close(pidfd)


class Severance:
    """Keeps process ``pid`` cut off from the ``ports`` of ``peers`` (PID → ports), and
    theirs from its ``own_ports``, until :meth:`stop`: a connection between them that
    opens meanwhile is cut within :data:`_RECHECK` seconds."""

    def __init__(self, pid: int, own_ports: Collection[int],
                 peers: Mapping[int, Collection[int]]) -> None:
        self._pid = pid
        self._own_ports = set(own_ports)
        self._their_ports = {port for ports in peers.values() for port in ports}
        self._pids = [pid, *peers]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._keep_cutting, daemon=True,
                                        name=f"severance-{pid}")
        self.failures: list[str] = []
        """What could not be cut (empty while the severance holds)."""

    def start(self) -> None:
        """Cut what connects them now (``AssertionError`` if any is left), then keep watch."""
        left = cut(self._links(), self._pids)
        assert not left, f"cannot cut process {self._pid} off: " + "; ".join(left)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (what connects afterwards stays connected)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _links(self) -> list[Connection]:
        return [link for link in connections(self._pids)
                if (link.remote_port in self._their_ports if link.pid == self._pid
                    else link.remote_port in self._own_ports)]

    def _keep_cutting(self) -> None:
        while not self._stopped.wait(_RECHECK):
            self.failures.extend(cut(self._links(), self._pids))
