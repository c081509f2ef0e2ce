"""Bad input and hostile names, on every backend: one clear conch error, or safe work.

* **hostile names** (64 KiB, NUL, unicode, ``../../etc/passwd``, SQL and Lua
  metacharacters, bytes that are not UTF-8) lock and exclude like any name, and
  whatever they contain, nothing is written outside the backend's own namespace:
  no file outside the lock directory, no key outside conch's prefix or chroot,
  no table but conch's. An empty name is refused.
* **wrong credentials** and **malformed or hostile URLs** give one conch error
  (:class:`~conch.BackendUnavailable` or :class:`~conch.InvalidURL`) within a few
  seconds, and the password shows in no message, ``repr``, chained exception or
  log record (every logger, at DEBUG).
"""

from __future__ import annotations

import base64
import logging
import pathlib
import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest

import conch
from conch.lock import MAX_NAME_BYTES
from tests.chaos.scenario import Scenario
from tests.chaos.targets import PROCESS_BACKENDS, Target
from tests.servers.base import free_port
from tests.servers.etcd import EtcdServer
from tests.servers.memcached import MemcachedProcess
from tests.servers.mysql import MySQLServer
from tests.servers.postgresql import PostgreSQLServer
from tests.servers.redis import RedisProcess
from tests.servers.zookeeper import ZooKeeperServer

HOSTILE_NAMES: dict[str, str | bytes] = {
    "64KiB": "n" * MAX_NAME_BYTES,
    "nul": "before\x00after",
    "unicode": "vnf-ünïcødé-日本語-🔒",
    "path-escape": "../../etc/passwd",
    "absolute-path": "/etc/passwd",
    "sql": "x'); DROP TABLE conch_fencing; DROP SEQUENCE conch_fencing_token; --",
    "lua": "]] redis.call('flushall') --[[",
    "memcached-command": "k\r\nflush_all\r\n",
    "not-utf8": b"\xff\xfe\x80\xc3(",
}
SECRET = "hostile-secret-p@ss:w/rd"
ANSWER_BOUND = 8.0
"""Seconds within which a refused URL or credential must be answered with an error."""


@pytest.fixture
def all_logs() -> Iterator[list[logging.LogRecord]]:
    """Every log record of every logger, at DEBUG, while the test runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root, handler = logging.getLogger(), Keep(logging.DEBUG)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def shown(records: list[logging.LogRecord]) -> str:
    """All that the log records would show, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in records)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("target", ["memory", *PROCESS_BACKENDS], indirect=True)
def test_hostile_names_lock_exclude_and_stay_inside_the_backends_namespace(
    scenario: Scenario, tmp_path: pathlib.Path
) -> None:
    mine, theirs = scenario.coordinator(), scenario.coordinator()
    with pytest.raises(conch.InvalidLockName):
        mine.lock("")
    tokens: dict[str, int | None] = {}
    for case, name in HOSTILE_NAMES.items():
        held = mine.lock(name)
        assert held.acquire(blocking=5), case
        assert theirs.lock(name).acquire(blocking=False) is False, case
        tokens[case] = held.token
        held.release()
    assert None not in tokens.values()
    foreign = outside_namespace(scenario.target, tmp_path)
    assert not foreign, f"written outside conch's namespace: {foreign[:10]}"
    # The SQL names harmed no table: tokens of a name still increase.
    again = mine.lock(HOSTILE_NAMES["sql"])
    assert again.acquire(blocking=5)
    assert again.token is not None and again.token > (tokens["sql"] or 0)
    again.release()


def outside_namespace(target: Target, tmp_path: pathlib.Path) -> list[str]:
    """What the backend's server (or directory) holds outside the namespace of ``target``."""
    server = target.server
    if target.backend == "memory":
        return []
    if target.backend == "file":
        locks = tmp_path / "locks"
        strays = [str(p) for p in tmp_path.iterdir() if p.name not in ("locks", "run")]
        return strays + [str(p) for p in locks.iterdir() if not p.is_file()]
    if isinstance(server, RedisProcess):
        with server.admin() as admin:
            return [key.decode() for key in admin.keys("*") if not key.startswith(b"conch:")]
    if isinstance(server, MemcachedProcess):
        return [key for key in memcached_keys(server.port) if not key.startswith("conch%3A")]
    if isinstance(server, EtcdServer):
        everything = server.call("/v3/kv/range", {"key": _b64(b"\0"), "range_end": _b64(b"\0"),
                                                  "keys_only": True})
        keys = [base64.b64decode(kv["key"]).decode() for kv in everything.get("kvs", [])]
        return [key for key in keys if not key.startswith("/chaos-")]
    if isinstance(server, ZooKeeperServer):
        return [path for path in zookeeper_paths(server, "/")
                if not path.startswith(("/chaos-", "/zookeeper"))]
    if isinstance(server, PostgreSQLServer):
        relations = server.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')")
        return [str(row[0]) for row in relations if not str(row[0]).startswith("conch_")]
    assert isinstance(server, MySQLServer)
    tables = server.execute("SELECT table_schema, table_name FROM information_schema.tables"
                            " WHERE table_schema NOT IN ('mysql', 'information_schema',"
                            " 'performance_schema', 'sys')")
    return [f"{schema}.{table}" for schema, table in tables
            if not str(table).startswith("conch_")]


def memcached_keys(port: int) -> list[str]:
    """Every key the memcached on ``port`` holds (its LRU crawler's dump; URL-encoded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        dump = b""
        while not dump.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            dump += chunk
    return [line.split()[0].removeprefix(b"key=").decode()
            for line in dump.splitlines() if line.startswith(b"key=")]


def zookeeper_paths(server: ZooKeeperServer, top: str) -> list[str]:
    """Every znode below ``top`` that the chaos credentials may list."""
    from tests.chaos.targets import PASSWORD

    client = server.admin(f"conch:{PASSWORD}")
    try:
        found, pending = [], [top]
        while pending:
            path = pending.pop()
            for child in client.get_children(path):
                child_path = f"{path.rstrip('/')}/{child}"
                found.append(child_path)
                if not child_path.startswith("/zookeeper"):
                    pending.append(child_path)
        return found
    finally:
        client.stop()
        client.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def with_password(url: str, password: str) -> str:
    """``url`` with its password replaced (the user kept, or ``conch`` when it had none)."""
    parts = urllib.parse.urlsplit(url)
    user = parts.username or "conch"
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{urllib.parse.quote(password, safe='')}@{host}").geturl()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["memory", *PROCESS_BACKENDS], indirect=True)
def test_wrong_credentials_are_one_clear_error_shown_and_logged_without_the_password(
    scenario: Scenario, all_logs: list[logging.LogRecord]
) -> None:
    if scenario.target.backend == "zookeeper":
        # Digest auth refuses nothing by itself: the chroot's ACL (made by the right
        # credentials) refuses the wrong ones.
        scenario.coordinator()
    wrong = with_password(scenario.target.url(), SECRET)
    started = time.monotonic()
    try:
        with conch.connect(wrong) as coordinator:
            # Accepted (a backend without credentials may ignore them): it must work,
            # and show no password either.
            shown_text = f"{coordinator!r} {coordinator.url}"
            lock = coordinator.lock(scenario.lock_name)
            assert lock.acquire(blocking=False)
            lock.release()
    except conch.ConchError as exc:
        expected = conch.BackendUnavailable if scenario.target.password else conch.InvalidURL
        assert isinstance(exc, expected), repr(exc)
        assert_never_shown(SECRET, exc, all_logs)
        scenario.note("wrong credentials", f"{type(exc).__name__}: {exc}")
    else:
        assert scenario.target.password is None, "wrong credentials were accepted"
        assert_never_shown(SECRET, Exception(shown_text), all_logs)
        scenario.note("wrong credentials", "ignored: the backend takes none")
    assert time.monotonic() - started < ANSWER_BOUND


def assert_never_shown(secret: str, error: BaseException,
                       records: list[logging.LogRecord]) -> None:
    """``secret`` (or its URL-encoded form) is in no message, repr, cause or log record."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}
    texts = [str(error), repr(error), shown(records)]
    cause: BaseException | None = error
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__ or cause.__context__
    leaks = [text[:200] for text in texts for form in forms if form in text]
    assert not leaks, f"the password shows: {leaks}"


def hostile_urls(scheme: str) -> dict[str, str]:
    """Malformed or hostile URLs of ``scheme``, each with the password :data:`SECRET`."""
    secret = urllib.parse.quote(SECRET, safe="")
    closed = free_port()  # nothing listens: no URL here reaches a server
    base = f"{scheme}://conch:{secret}@127.0.0.1"
    return {
        "port out of range": f"{base}:70000/x",
        "unclosed IPv6 bracket": f"{scheme}://conch:{secret}@[::1/x",
        "empty port": f"{base}:/x",
        "unknown option": f"{base}:{closed}/x?flushall=1",
        "NUL in an option": f"{base}:{closed}/x?connect_timeout=1%00",
        "injected option value": f"{base}:{closed}/x?connect_timeout=1;DROP%20TABLE%20x",
        "repeated separators": f"{base}:{closed}/x??&&==",
        "64 KiB path": f"{base}:{closed}/{'p' * MAX_NAME_BYTES}",
        "CRLF in the path": f"{base}:{closed}/x%0d%0aFLUSHALL%0d%0a",
        "password in a query secret": f"{base}:{closed}/x?password={secret}",
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["memory", *PROCESS_BACKENDS], indirect=True)
def test_malformed_and_hostile_urls_are_one_clear_error_without_the_password(
    target: Target, all_logs: list[logging.LogRecord]
) -> None:
    scheme = target.backend
    for case, url in hostile_urls(scheme).items():
        started = time.monotonic()
        try:
            with conch.connect(url) as coordinator:
                # Accepted: then it must work, safely, and show no password either.
                shown_text = f"{coordinator!r} {coordinator.url}"
                lock = coordinator.lock("x")
                assert lock.acquire(blocking=False), case
                lock.release()
            assert SECRET not in shown_text and urllib.parse.quote(SECRET, safe="") \
                not in shown_text, case
        except conch.ConchError as exc:
            assert isinstance(exc, conch.InvalidURL | conch.BackendUnavailable), (case, exc)
            assert_never_shown(SECRET, exc, all_logs)
        assert time.monotonic() - started < ANSWER_BOUND, case
    assert_never_shown(SECRET, Exception(), all_logs)
