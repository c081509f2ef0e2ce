"""The chaos suite's own tool for cutting connections that pass no proxy
(:mod:`tests.chaos.sockets`): each way of cutting works on this machine, and is checked."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.chaos.sockets import Connection, _shut_down, connections, cut
from tests.servers.base import wait_until

# A child that connects to the port in argv[1], says "connected", and exits once the
# connection ends (as a ZooKeeper member drops an election link that reads EOF).
_CHILD = """
import socket, sys
link = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
try:
    while link.recv(4096):
        pass
except OSError:  # ss -K aborts the socket; a shutdown ends the stream
    pass
"""


@pytest.fixture
def linked() -> Iterator[tuple[subprocess.Popen[str], Connection]]:
    """A child process connected to a listener of ours, and its end of the connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(port)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "connected\n"
            ours, _ = listener.accept()
            with ours:
                (link,) = [c for c in connections([child.pid]) if c.remote_port == port]
                yield child, link
        finally:
            child.kill()
            child.wait()


def test_cut_ends_a_connection_of_another_process_and_finds_nothing_left(
    linked: tuple[subprocess.Popen[str], Connection],
) -> None:
    child, link = linked
    assert cut([link], [child.pid]) == []
    assert child.wait(10) == 0


def test_a_connection_shut_down_through_a_duplicate_descriptor_ends_in_its_owner(
    linked: tuple[subprocess.Popen[str], Connection],
) -> None:
    # The way cut() takes when ss -K may not (no CAP_NET_ADMIN).
    child, link = linked
    _shut_down(link)
    assert child.wait(10) == 0
    wait_until(lambda: link not in connections([child.pid]), 5, "the connection's end")
