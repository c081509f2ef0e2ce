"""``zookeeper://[user:password@]host:port[,host:port...][/chroot][?options]``: locks,
semaphores and groups under the chroot, one ZooKeeper session per coordinator
(docs/zookeeper.md)."""

from __future__ import annotations

import re
from typing import Any

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.kit.naming import readable_key
from conch.backends.kit.tls import OptionNames, client_context, tls_from_url
from conch.backends.kit.tls_diagnosis import diagnose_endpoints
from conch.backends.zookeeper.groups import ZooKeeperGroupStore
from conch.backends.zookeeper.lock import CHILD, ZooKeeperLock, sequence, sequence_distance
from conch.backends.zookeeper.session import NoSession, ZooKeeperSession
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp
from conch.url import BackendURL

DEFAULT_PORT = 2181
DEFAULT_ROOT = "/conch"
# kazoo's names (tooz's too), with check_hostname: on by default here, unlike kazoo.
TLS_OPTIONS = OptionNames(ca="ca", cert="certfile", key="keyfile",
                          key_password="keyfile_password", verify="verify_certs",
                          check_hostname="check_hostname")
# Characters ZooKeeper refuses in a path (its Programmer's Guide, "ZNodes").
_BAD_PATH_CHARS = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]")
_BATCH = 200  # listing reads sent at once, answered in order: a few hundred locks at a time


class ZooKeeperBackend(Backend):
    """Locks in a ZooKeeper ensemble; one ZooKeeper session per coordinator."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=True, notify=True,
        shared_locks=True, distributed=True, introspection=True, breakable=True,
        groups=True, semaphores=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        query = url.options({"timeout", "connect_timeout", "use_ssl", *TLS_OPTIONS})
        self.tls_files = tls_from_url(url, TLS_OPTIONS, url.bool_option("use_ssl", False),
                                      "use_ssl=true")
        if self.tls_files is not None and ("certfile" in query) != ("keyfile" in query):
            # kazoo loads a client certificate only when given both.
            raise InvalidURL(f"certfile and keyfile go together: {url}")
        if not url.hosts:
            raise InvalidURL(f"zookeeper:// URLs need at least one host[:port]: {url}")
        if url.username is not None and url.password is None:
            raise InvalidURL(f"zookeeper:// credentials need user:password@ (digest): {url}")
        chroot = _chroot(url)
        self.locks_path, self.groups_path = f"{chroot}/locks", f"{chroot}/groups"
        self.semaphores_path = f"{chroot}/semaphores"
        self.endpoints = [(host, port or DEFAULT_PORT) for host, port in url.hosts]
        hosts = ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                         for host, port in self.endpoints)
        credentials = None if url.password is None else (url.username or "", url.password)
        self.session = ZooKeeperSession(hosts, url.float_option("timeout", 10.0),
                                        url.float_option("connect_timeout", 5.0),
                                        credentials, self.tls_files)

    def connect(self) -> None:
        session = self.session
        # kazoo reads the TLS files at each connection attempt and retries a failure until
        # the timeout: read them first, so that a bad file is named at once.
        context = None if self.tls_files is None else \
            client_context(self.tls_files, f"ZooKeeper at {session.hosts}")
        try:
            session.open(self.locks_path)
        except NoSession as exc:
            problem = diagnose_endpoints(self.endpoints, context, session.connect_timeout,
                                         "add use_ssl=true to the URL")
            if problem is not None:
                raise BackendUnavailable(f"{exc} ({problem})") from None
            raise

    def close(self) -> None:
        self.session.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return ZooKeeperLock(self.session, self._parent(key), key, self.member_id, on_lost)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return ZooKeeperLock(self.session, self._parent(key), key, self.member_id, on_lost,
                             shared=True)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        return ZooKeeperLock(self.session, f"{self.semaphores_path}/{readable_key(key)}", key,
                             self.member_id, on_lost, limit=limit)

    def groups(self) -> GroupStore:
        return ZooKeeperGroupStore(self.session, self.groups_path, self.member_id)

    # Who holds a lock: the first child of its znode (its data the stamp, its stat the token).

    def describe_lock(self, key: bytes) -> LockInfo:
        return self._describe(key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        session = self.session
        names = session.read(session.client.get_children_async(self.locks_path), "list locks", [])
        found = []
        for start in range(0, len(names), _BATCH):
            paths = [f"{self.locks_path}/{name}" for name in names[start: start + _BATCH]]
            listings = [(path, session.client.get_children_async(path)) for path in paths]
            readings = [(session.client.get_async(f"{path}/{queue[0]}"), len(queue) - 1)
                        for path, listing in listings
                        if (queue := _queue(session.read(listing, "list a lock queue", [])))]
            for reading, waiters in readings:  # stat None: released meanwhile
                data, stat = session.read(reading, "read a lock holder", (None, None))
                if stat is not None and (stamp := read_stamp(data)) is not None:
                    found.append(LockInfo(stamp.key, _holder(data, stat), waiters))
        return found

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        lock, path = self._describe(key)
        if not has_hold_to_break(lock, token) or path is None:
            return lock
        try:  # the child's name is unique to this hold: deleting it never ends another
            self.session.answer(self.session.client.delete_async(path), "delete the lock holder")
        except NoNodeError:
            raise HolderChanged(f"lock {lock.name!r} was released while being broken") from None
        return lock

    def _describe(self, key: bytes) -> tuple[LockInfo, str | None]:
        """Lock ``key`` and the path of its holder's child."""
        session, parent = self.session, self._parent(key)
        for _ in range(3):  # the holder may leave between the listing and the read
            queue = _queue(session.read(session.client.get_children_async(parent),
                                        "list the lock queue", []))
            if not queue:
                break
            path = f"{parent}/{queue[0]}"
            data, stat = session.read(session.client.get_async(path), "read the lock holder",
                                      (None, None))
            if stat is not None:
                return LockInfo(key, _holder(data, stat), len(queue) - 1), path
        return LockInfo(key, None, 0), None

    def _parent(self, key: bytes) -> str:
        """The znode of lock ``key``, whose children are its queue."""
        return f"{self.locks_path}/{readable_key(key)}"


def _chroot(url: BackendURL) -> str:
    """The URL's path as a ZooKeeper path (``/conch`` when empty)."""
    path = url.path.rstrip("/")
    if not path:
        return DEFAULT_ROOT
    parts = path.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts) or _BAD_PATH_CHARS.search(path):
        raise InvalidURL(f"not a valid ZooKeeper path: {path!r} in {url}")
    if parts[0] == "zookeeper":
        raise InvalidURL(f"/zookeeper is reserved by ZooKeeper: {url}")
    return path


def _queue(children: list[str]) -> list[str]:
    """A lock's children in queue order, the holder first (see sequence_distance)."""
    ours = [child for child in children if CHILD.match(child)]
    return sorted(ours, key=lambda child: sequence_distance(sequence(child), sequence(ours[0])))


def _holder(data: bytes, stat: Any) -> HolderInfo:
    session = f"0x{stat.ephemeralOwner:x}"
    stamp = read_stamp(data)
    if stamp is None:  # a child from before stamps: its data was the member id
        member = data.decode("utf-8", "replace") or None
        return HolderInfo(member_id=member, acquired_at=stat.mtime / 1000,
                          token=stat.czxid, session=session)
    return stamp.holder(token=stat.czxid, session=session)
