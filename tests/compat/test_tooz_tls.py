"""tooz's TLS URLs through conch.compat.tooz.get_coordinator, on the TLS test servers:
etcd3gw's ``etcd3+https://`` with ``ca_cert``/``cert_cert``/``cert_key``, and the
zookeeper driver's ``use_ssl``/``ca``/``certfile``/``keyfile``/``keyfile_password``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.compat.tooz import coordination
from tests.servers.etcd import EtcdServer
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


@pytest.fixture(params=["etcd3gw", "kazoo"])
def tooz_tls_url(request: pytest.FixtureRequest, pki: PKI) -> Iterator[str]:
    """A tooz TLS URL for each TLS test server, trusting the right CA."""
    if request.param == "etcd3gw":
        yield etcd3gw_url(request.getfixturevalue("etcd_tls_server"), pki, pki.ca)
    else:
        yield kazoo_url(request.getfixturevalue("zookeeper_tls_server"), pki, pki.ca)


def test_tooz_tls_urls_give_working_locks(tooz_tls_url: str) -> None:
    first = coordination.get_coordinator(tooz_tls_url, b"conductor-1")
    second = coordination.get_coordinator(tooz_tls_url, b"conductor-2")
    first.start()
    second.start()
    try:
        name = f"vnf-{uuid.uuid4().hex}".encode()
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
