"""A TCP proxy in the test process, between clients and one server port, that tests break.

A client given ``127.0.0.1:<proxy.port>`` instead of the server's port talks to
the server through two pump threads per connection. The test then breaks the
path the way networks break:

* :meth:`Proxy.cut`: every connection is reset now (both ends get an RST), as
  when a NAT or a firewall drops its state; with :meth:`Proxy.refuse` new
  connections are reset too, until :meth:`Proxy.restore`.
* :meth:`Proxy.partition`: nothing goes through, in either direction, but nothing
  is closed either: bytes, and the end of a stream, wait in the proxy, as packets
  are retransmitted while a link is down; new connections get no answer.
  :meth:`Proxy.heal` lets everything through again.
* :meth:`Proxy.drop_next_reply`: the next request (holding given bytes) is
  delivered, then the server's reply to it is thrown away and the connection
  reset: the server applied a request whose sender never heard back.

A partition may be partial: with ``sources``, only connections opened by those
processes are held (found through ``/proc``, the source port's socket inode),
which is how a member of a cluster on loopback is cut off from the others.
Loopback only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Collection

from tests.chaos.sockets import connecting_pid

_CHUNK = 65536


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port`` until :meth:`close`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._mutex = threading.Lock()
        self._links: set[_Link] = set()
        self._refusing = False
        self._held_sources: frozenset[int] | None = None  # None: none held; empty: all
        self._flowing = threading.Condition(self._mutex)
        self._drop_armed = False
        self._drop_marker = b""
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"proxy-{self.port}")
        self._acceptor.start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """Connections open through the proxy right now."""
        with self._mutex:
            return len(self._links)

    def cut(self) -> int:
        """Reset every open connection (RST to both ends); return how many."""
        with self._mutex:
            links = list(self._links)
        for link in links:
            link.reset()
        return len(links)

    def refuse(self) -> None:
        """Reset new connections as soon as they arrive (a host that is down)."""
        with self._mutex:
            self._refusing = True

    def restore(self) -> None:
        """Accept new connections again after :meth:`refuse`."""
        with self._mutex:
            self._refusing = False

    def partition(self, sources: Collection[int] = ()) -> None:
        """Hold all traffic, or only that of connections opened by processes ``sources``."""
        with self._mutex:
            self._held_sources = frozenset(sources)
        for link in self.links():
            link.classify()

    def heal(self) -> None:
        """End a :meth:`partition`: what was held is delivered, in order."""
        with self._flowing:
            self._held_sources = None
            self._flowing.notify_all()

    def drop_next_reply(self, containing: bytes = b"") -> None:
        """Deliver the next request (the next one ``containing`` those bytes), then drop
        the reply to it and reset its connection."""
        with self._mutex:
            self._drop_armed = True
            self._drop_marker = containing

    @property
    def reply_dropped(self) -> bool:
        """True once the reply armed by :meth:`drop_next_reply` was dropped."""
        with self._mutex:
            return not self._drop_armed

    def links(self) -> list[_Link]:
        """The connections open now."""
        with self._mutex:
            return list(self._links)

    def close(self) -> None:
        """Stop accepting and reset every connection."""
        with self._flowing:
            self._closed = True
            self._held_sources = None
            self._flowing.notify_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.cut()
        self._acceptor.join(5)

    # --- the pumps ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._mutex:
                refusing = self._refusing or self._closed
            if refusing:
                _reset(client)
                continue
            threading.Thread(target=self._open_link, args=(client,), daemon=True).start()

    def _open_link(self, client: socket.socket) -> None:
        link = _Link(self, client)
        with self._mutex:
            self._links.add(link)
        link.classify()
        if not self._wait_flowing(link):
            link.reset()
            return
        try:
            link.server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            link.server.settimeout(None)
        except OSError:
            link.reset()
            return
        threading.Thread(target=self._pump, args=(link, True), daemon=True).start()
        self._pump(link, False)

    def _wait_flowing(self, link: _Link) -> bool:
        """Block while ``link`` is held by a partition; False once it was reset."""
        with self._flowing:
            while not link.dead and not self._closed and self._holds(link):
                self._flowing.wait(0.5)
            return not link.dead

    def _holds(self, link: _Link) -> bool:
        held = self._held_sources
        return held is not None and (not held or link.source in held)

    def _pump(self, link: _Link, upstream: bool) -> None:
        """Copy client → server (``upstream``) or server → client until either end closes."""
        source = link.client if upstream else link.server
        target = link.server if upstream else link.client
        assert source is not None and target is not None
        try:
            while True:
                data = source.recv(_CHUNK)
                if not self._wait_flowing(link):
                    return
                if not upstream and data and link.drop_reply:
                    link.reset()
                    return
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                if upstream:
                    with self._mutex:
                        if self._drop_armed and self._drop_marker in data:
                            self._drop_armed = False
                            link.drop_reply = True
                target.sendall(data)
        except OSError:
            link.reset()
        finally:
            if link.pump_ended():
                self._forget(link)

    def _forget(self, link: _Link) -> None:
        with self._mutex:
            self._links.discard(link)


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: Proxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.source: int | None = None  # the PID that opened the client connection
        self.drop_reply = False
        self.dead = False
        self._pumps_running = 2
        self._count_lock = threading.Lock()

    def pump_ended(self) -> bool:
        """Note that one of the two pumps ended; True when both have."""
        with self._count_lock:
            self._pumps_running -= 1
            return self._pumps_running <= 0

    def classify(self) -> None:
        """Find the process that opened this connection (once, when a partition needs it)."""
        if self.source is None and self.proxy._held_sources:
            self.source = connecting_pid(self.client, self.proxy._held_sources)

    def reset(self) -> None:
        """Reset both ends (RST, not FIN) and wake the pumps."""
        with self.proxy._flowing:
            self.dead = True
            self.proxy._flowing.notify_all()
        for sock in (self.client, self.server):
            if sock is not None:
                _reset(sock)
        self.proxy._forget(self)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # SO_LINGER on with a zero timeout: close() sends an RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
