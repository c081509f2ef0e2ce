"""``etcd[+https]://[user:password@]host:port[,host:port][/prefix][?options]``: locks and
groups in an etcd v3 cluster through its JSON gateway (docs/etcd.md has the options)."""

from __future__ import annotations

from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.etcd.client import Gateway, Message, created, decode, keys_under
from conch.backends.etcd.groups import EtcdGroupStore
from conch.backends.etcd.lock import EtcdLock, EtcdPermit
from conch.backends.etcd.session import EtcdSession
from conch.backends.kit.naming import hex_digest
from conch.backends.kit.tls import OptionNames, tls_from_url
from conch.backends.kit.tls_diagnosis import diagnose_endpoints
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL
from conch.introspection import (
    HolderChanged,
    HolderInfo,
    HolderStamp,
    LockInfo,
    has_hold_to_break,
    read_stamp,
)
from conch.url import BackendURL

DEFAULT_PREFIX = "/conch/locks"
DEFAULT_TTL = 10
SEMAPHORES = b"/semaphores/"  # the semaphores' queues, beside the locks' (hex digests)
TLS_OPTIONS = OptionNames(ca="ssl_ca", cert="ssl_cert", key="ssl_key")


class EtcdBackend(Backend):
    """Locks in an etcd v3 cluster, through its JSON gateway."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=True, notify=True,
        shared_locks=True, distributed=True, introspection=True, breakable=True,
        groups=True, semaphores=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options({"ttl", "connect_timeout", "timeout", *TLS_OPTIONS})
        ttl = url.query.get("ttl", str(DEFAULT_TTL))
        if not ttl.isdigit() or int(ttl) < 1:
            raise InvalidURL(f"option ttl must be a whole number of seconds >= 1, got {ttl!r}")
        if url.password is not None and not url.username:
            raise InvalidURL(f"a password needs a user name (user:password@host): {url}")
        tls_files = tls_from_url(url, TLS_OPTIONS, url.scheme == "etcd+https",
                                 "an etcd+https:// URL")
        self.prefix = (url.path.rstrip("/") or DEFAULT_PREFIX).encode()
        self.gateway = Gateway(url, tls_files)
        self.session = EtcdSession(self.gateway, member_id, int(ttl))
        self._groups: EtcdGroupStore | None = None

    def connect(self) -> None:
        try:
            self.gateway.open()
            self.gateway.authenticate()
            # Granting a lease needs no permission: a read fails here without rights.
            self.gateway.call("/v3/kv/range",
                              keys_under(self.prefix + b"/", limit="1", count_only=True))
            self.session.lease()  # the first lease starts the heartbeat
        except BackendUnavailable as exc:
            self.gateway.close()
            raise self._diagnosed(exc) from None

    def close(self) -> None:
        if self._groups is not None:
            self._groups.close()
        self.session.close()
        self.gateway.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return EtcdLock(self.session, self.queue(key), HolderStamp(key, self.member_id), on_lost)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return EtcdLock(self.session, self.queue(key), HolderStamp(key, self.member_id),
                        on_lost, shared=True)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        return EtcdPermit(self.session, self.queue(key, SEMAPHORES),
                          HolderStamp(key, self.member_id), on_lost, key, limit)

    def queue(self, key: bytes, kind: bytes = b"/") -> bytes:
        """The key prefix of lock ``key``'s queue: 160 bits of its SHA-256 (after
        :data:`SEMAPHORES` for a semaphore's)."""
        return self.prefix + kind + hex_digest(key, 40).encode() + b"/"

    def groups(self) -> GroupStore:
        self._groups = EtcdGroupStore(self.session, self.prefix, self.member_id)
        return self._groups

    def describe_lock(self, key: bytes) -> LockInfo:
        return self._describe(key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        # The queues (hex digests) from "<prefix>/0" to "<prefix>/f...", not groups, semaphores.
        answer = self.gateway.call("/v3/kv/range",
                                   keys_under(self.prefix + b"/0", self.prefix + b"/g"))
        queues: dict[bytes, list[Message]] = {}
        for kv in answer.get("kvs", []):
            queues.setdefault(decode(kv["key"]).rpartition(b"/")[0], []).append(kv)
        found = []
        for kvs in queues.values():
            first = min(kvs, key=lambda kv: int(kv["create_revision"]))
            stamp = read_stamp(decode(first.get("value", "")))
            if stamp is not None:
                found.append(LockInfo(stamp.key, self._holder(first), len(kvs) - 1))
        return found

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        lock, kv = self._describe(key)
        if not has_hold_to_break(lock, token) or kv is None:
            return lock
        answer = self.gateway.txn(  # only if the holder's key is still the one read
            compare=[created({"key": kv["key"]}, kv["create_revision"])],
            success=[{"request_delete_range": {"key": kv["key"]}}])
        if not answer.get("succeeded"):
            raise HolderChanged(f"lock {lock.name!r} was released while being broken")
        return lock

    def _diagnosed(self, failure: BackendUnavailable) -> BackendUnavailable:
        """``failure``, or the TLS problem behind it when a connection of our own finds one."""
        endpoint = getattr(failure, "tls_suspect", None)  # client.Unreachable's
        problem = endpoint and diagnose_endpoints([endpoint], self.gateway.ssl_context,
                                                  self.gateway.connect_timeout,
                                                  "use an etcd+https:// URL")
        if endpoint is None or problem is None:
            return failure
        return BackendUnavailable(f"etcd at {endpoint[0]}:{endpoint[1]} is unreachable "
                                  f"({problem})")

    def _describe(self, key: bytes) -> tuple[LockInfo, Message | None]:
        """Lock ``key`` and its holder's key-value ("count" counts the keys beyond the limit)."""
        answer = self.gateway.call("/v3/kv/range", keys_under(
            self.queue(key), sort_order="ASCEND", sort_target="CREATE", limit="1"))
        kvs = answer.get("kvs", [])
        if not kvs:
            return LockInfo(key, None, 0), None
        waiters = max(0, int(answer.get("count", "1")) - 1)
        return LockInfo(key, self._holder(kvs[0]), waiters), kvs[0]

    def _holder(self, kv: Message) -> HolderInfo:
        lease = int(kv.get("lease", "0"))
        ttl = self.gateway.lease_ttl(lease)[1] if lease else -1
        known = {"token": int(kv["create_revision"]),
                 "ttl_left": float(ttl) if ttl >= 0 else None,
                 "session": f"{lease:x}" if lease else None}
        stamp = read_stamp(decode(kv.get("value", "")))
        if stamp is None:  # a key from before stamps: its value was the member id
            member = decode(kv.get("value", "")).decode("utf-8", "replace") or None
            return HolderInfo(member_id=member, **known)  # type: ignore[arg-type]
        return stamp.holder(**known)
