"""tooz's TLS URLs through conch.compat.tooz.get_coordinator, on the TLS test servers:
etcd3gw's ``etcd3+https://`` with ``ca_cert``/``cert_cert``/``cert_key``, the zookeeper
driver's ``use_ssl``/``ca``/``certfile``/``keyfile``/``keyfile_password``, redis's
``ssl=true`` with redis-py's ``ssl_*``, mysql's ``ssl_*`` and memcached's ``use_ssl`` with
``ca_cert``/``ssl_cert``/``ssl_key``/``ssl_key_password`` (Sentinel's are in
tests/backends/test_redis_sentinel.py)."""

from __future__ import annotations

import uuid

import pytest

import conch
from conch.compat.tooz import coordination
from tests.servers.etcd import EtcdServer
from tests.servers.memcached import MemcachedProcess
from tests.servers.redis import RedisProcess
from tests.servers.zookeeper import ZooKeeperServer
from tests.tls import KEY_PASSWORD, PKI


def etcd3gw_url(server: EtcdServer, pki: PKI, ca: str) -> str:
    # conch's etcd takes user:password@ (the test server has auth on); etcd3gw does not.
    return (f"etcd3+https://root:{server.password}@{server.endpoint}?ca_cert={ca}"
            f"&cert_cert={pki.client_cert_without_cn}&cert_key={pki.client_key_without_cn}"
            f"&lock_timeout=3")


def kazoo_url(server: ZooKeeperServer, pki: PKI, ca: str) -> str:
    return (f"kazoo://{server.hosts}?namespace=conch-{uuid.uuid4().hex}&use_ssl=true"
            f"&ca={ca}&certfile={pki.client_cert}&keyfile={pki.encrypted_client_key}"
            f"&keyfile_password={KEY_PASSWORD}&verify_certs=true&connect_timeout=1")


def redis_url(server: RedisProcess, pki: PKI) -> str:
    return (f"redis://:{server.password}@127.0.0.1:{server.port}?ssl=true"
            f"&ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}"
            f"&ssl_keyfile={pki.client_key}")


def memcached_url(server: MemcachedProcess, pki: PKI) -> str:
    return (f"memcached://127.0.0.1:{server.port}?use_ssl=true&ca_cert={pki.ca}"
            f"&ssl_cert={pki.client_cert}&ssl_key={pki.encrypted_client_key}"
            f"&ssl_key_password={KEY_PASSWORD}&lock_timeout=3")


@pytest.fixture(params=["etcd3gw", "kazoo", "redis", "mysql", "memcached"])
def tooz_tls_url(request: pytest.FixtureRequest, pki: PKI) -> str:
    """A tooz TLS URL for each TLS test server (tooz 9.1's option names), trusting the
    right CA and showing a client certificate."""
    if request.param == "etcd3gw":
        return etcd3gw_url(request.getfixturevalue("etcd_tls_server"), pki, pki.ca)
    if request.param == "kazoo":
        return kazoo_url(request.getfixturevalue("zookeeper_tls_server"), pki, pki.ca)
    if request.param == "redis":
        return redis_url(request.getfixturevalue("redis_tls_server"), pki)
    if request.param == "memcached":
        return memcached_url(request.getfixturevalue("memcached_tls_server"), pki)
    return str(request.getfixturevalue("mysql_tls_url"))  # tooz's names are conch's


def test_tooz_tls_urls_give_working_locks(tooz_tls_url: str, lock_name: str) -> None:
    locks_through_tooz(tooz_tls_url, lock_name)


def locks_through_tooz(url: str, lock_name: str) -> None:
    """Two tooz coordinators of ``url`` exclude each other on ``lock_name``, and the
    second gets it once the first releases it."""
    first = coordination.get_coordinator(url, b"conductor-1")
    second = coordination.get_coordinator(url, b"conductor-2")
    first.start()
    second.start()
    try:
        name = lock_name.encode()
        with first.get_lock(name):
            assert second.get_lock(name).acquire(blocking=False) is False
        assert second.get_lock(name).acquire(blocking=1)
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize("driver", ["etcd3gw", "kazoo"])
def test_a_wrong_ca_in_a_tooz_url_is_a_tooz_connection_error(
    driver: str, pki: PKI, request: pytest.FixtureRequest
) -> None:
    if driver == "etcd3gw":
        url = etcd3gw_url(request.getfixturevalue("etcd_tls_server"), pki, pki.stranger_ca)
    else:
        url = kazoo_url(request.getfixturevalue("zookeeper_tls_server"), pki, pki.stranger_ca)
    coordinator = coordination.get_coordinator(url, b"conductor-1")
    with pytest.raises(coordination.ToozConnectionError) as raised:
        coordinator.start()
    assert isinstance(raised.value, conch.BackendUnavailable)
    assert "certificate verify failed" in str(raised.value)
    assert KEY_PASSWORD not in str(raised.value)
