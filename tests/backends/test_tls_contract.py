"""The contract's core cases over TLS, on redis, mysql and memcached, and tooz's TLS URLs.

Each server of the suite speaks TLS with the session's test CA (tests/tls.py) and checks
client certificates against it: the TLS-only Redis and memcached of tests/servers/, and the
shared MariaDB (user ``conch_cert``, ``REQUIRE ISSUER``). The contract's own tests run here
with ``url`` (and ``other_coordinator``) overridden, so they are the same cases, not copies:
one try, a timed wait, a wait woken by the release, the hand-off.
"""

from __future__ import annotations

import pytest

import conch.compat.tooz as tooz
from tests.contract.conftest import other_coordinator
from tests.contract.test_blocking import (
    test_one_try_returns_false_at_once_when_held_elsewhere,
    test_timeout_returns_false_after_about_the_asked_time_when_held_elsewhere,
    test_wait_forever_returns_true_once_the_holder_releases,
)
from tests.contract.test_release import test_with_lock_holds_inside_and_releases_on_exit
from tests.contract.test_wakeup import test_waiter_returns_promptly_when_the_holder_releases
from tests.servers.memcached import MemcachedProcess
from tests.servers.mysql import CERTIFICATE_USER, MySQLServer
from tests.servers.redis import RedisProcess
from tests.tls import KEY_PASSWORD

CONTRACT_CASES = (
    other_coordinator,
    test_with_lock_holds_inside_and_releases_on_exit,
    test_one_try_returns_false_at_once_when_held_elsewhere,
    test_timeout_returns_false_after_about_the_asked_time_when_held_elsewhere,
    test_wait_forever_returns_true_once_the_holder_releases,
    test_waiter_returns_promptly_when_the_holder_releases,
)
"""Imported to run in this module (pytest collects them here too, with its fixtures)."""


def mysql_tls_url(server: MySQLServer) -> str:
    """The shared MariaDB over TLS, as the user that needs a client certificate."""
    pki = server.tls
    query = f"ssl_ca={pki.ca}&ssl_cert={pki.client_cert}&ssl_key={pki.client_key}"
    return server.url_with(user=CERTIFICATE_USER, query=query)


@pytest.fixture(params=["redis", "mysql", "memcached"])
def url(request: pytest.FixtureRequest) -> str:
    """Each backend's TLS URL in turn (this module's contract cases run on it)."""
    if request.param == "mysql":
        request.getfixturevalue("mysql_url")  # the server, running
        return mysql_tls_url(request.getfixturevalue("mysql_server"))
    return str(request.getfixturevalue(f"tls_{request.param}_url"))


@pytest.fixture(params=["redis", "mysql", "memcached"])
def tooz_tls_url(request: pytest.FixtureRequest) -> str:
    """Each TLS server's URL as a tooz user writes it (tooz 9.1's option names)."""
    if request.param == "mysql":  # tooz's names are conch's
        request.getfixturevalue("mysql_url")  # the server, running
        return mysql_tls_url(request.getfixturevalue("mysql_server"))
    server = request.getfixturevalue(f"tls_{request.param}_server")
    assert isinstance(server, RedisProcess | MemcachedProcess) and server.tls is not None
    pki, where = server.tls, f"127.0.0.1:{server.port}"
    if isinstance(server, RedisProcess):
        return (f"redis://:{server.password}@{where}?ssl=true&ssl_ca_certs={pki.ca}"
                f"&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}")
    return (f"memcached://{where}?use_ssl=true&ca_cert={pki.ca}&ssl_cert={pki.client_cert}"
            f"&ssl_key={pki.encrypted_client_key}&ssl_key_password={KEY_PASSWORD}"
            f"&lock_timeout=3")


def test_tooz_tls_options_lock_through_get_coordinator(tooz_tls_url: str,
                                                        lock_name: str) -> None:
    locks_through_tooz(tooz_tls_url, lock_name)


def locks_through_tooz(url: str, lock_name: str) -> None:
    """Two tooz coordinators of ``url`` exclude each other on ``lock_name``."""
    first = tooz.coordination.get_coordinator(url, b"first")
    second = tooz.coordination.get_coordinator(url, b"second")
    first.start()
    second.start()
    try:
        lock = first.get_lock(lock_name.encode())
        assert lock.acquire(blocking=False)
        assert second.get_lock(lock_name.encode()).acquire(blocking=False) is False
        assert lock.release()
    finally:
        first.stop()
        second.stop()
