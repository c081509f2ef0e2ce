"""etcd+https:// on a real etcd serving TLS only, with --client-cert-auth and auth on.

The contract's core runs over TLS too (``etcd-tls`` in tests/contract, with the client
certificate and user auth together); these tests check renewal over TLS and one clear
error for each way TLS goes wrong.
"""

from __future__ import annotations

import pathlib
import re
import time

import pytest

import conch
from tests.backends.tls_errors import start_fails
from tests.servers.etcd import EtcdServer
from tests.tls import PKI

WITHIN = 10.0
"""Seconds a failed start may take (a connect timeout of 3 s, and a diagnosis)."""


def test_a_hold_outlives_its_lease_ttl_over_tls(
    etcd_tls_server: EtcdServer, lock_name: str
) -> None:
    with conch.connect(etcd_tls_server.url(ttl=2)) as coordinator, \
            coordinator.lock(lock_name) as lock:
        time.sleep(3)  # the lease is renewed over TLS every 2/3 s
        assert not lock.lost.is_set()
        assert coordinator.describe(lock_name).holder is not None


def test_a_wrong_ca_is_one_clear_backend_unavailable(
    etcd_tls_server: EtcdServer, pki: PKI
) -> None:
    error = start_fails(etcd_tls_server.url(ssl_ca=pki.stranger_ca), WITHIN)
    assert f"etcd at {etcd_tls_server.endpoint}" in str(error)
    assert "certificate verify failed: unable to get local issuer certificate" in str(error)


def test_a_client_certificate_of_another_ca_is_refused_clearly(
    etcd_tls_server: EtcdServer, pki: PKI
) -> None:
    url = etcd_tls_server.url(ssl_cert=pki.stranger_client_cert,
                              ssl_key=pki.stranger_client_key)
    error = start_fails(url, WITHIN)
    assert f"etcd at {etcd_tls_server.endpoint}" in str(error)
    assert "the server refused the client certificate" in str(error)


def test_no_client_certificate_where_one_is_required_is_named(
    etcd_tls_server: EtcdServer, pki: PKI
) -> None:
    url = f"etcd+https://{etcd_tls_server.endpoint}?ssl_ca={pki.ca}"
    error = start_fails(url, WITHIN)
    assert f"etcd at {etcd_tls_server.endpoint}" in str(error)
    # etcd 3.4 answers a missing certificate with the alert it sends for an untrusted one.
    assert "the server refused the client certificate, or requires one" in str(error)


def test_a_client_certificate_with_a_common_name_is_refused_by_the_gateway_with_auth_on(
    etcd_tls_server: EtcdServer, pki: PKI
) -> None:
    url = etcd_tls_server.url(ssl_cert=pki.client_cert, ssl_key=pki.client_key)
    error = start_fails(url, WITHIN)
    assert "use one without a CN" in str(error)


def test_plain_http_to_the_tls_port_says_to_use_etcd_https(etcd_tls_server: EtcdServer) -> None:
    url = f"etcd://root:{etcd_tls_server.password}@{etcd_tls_server.endpoint}"
    error = start_fails(url, WITHIN)
    assert str(error) == (f"etcd at {etcd_tls_server.endpoint} is unreachable (the server "
                          f"expects TLS on this port: use an etcd+https:// URL)")


def test_tls_to_a_plain_port_says_the_server_does_not_speak_tls(
    etcd_server: EtcdServer, pki: PKI
) -> None:
    url = f"etcd+https://root:{etcd_server.password}@{etcd_server.endpoint}?ssl_ca={pki.ca}"
    error = start_fails(url, WITHIN)
    assert f"etcd at {etcd_server.endpoint}" in str(error)
    assert "the server does not speak TLS on this port" in str(error)


@pytest.mark.parametrize("option", ["ssl_ca", "ssl_cert", "ssl_key"])
def test_a_missing_tls_file_is_a_backend_unavailable_naming_it(
    etcd_tls_server: EtcdServer, pki: PKI, option: str, tmp_path: pathlib.Path
) -> None:
    missing = f"{tmp_path}/missing.pem"
    error = start_fails(etcd_tls_server.url(**{option: missing}), WITHIN)
    assert "cannot read the" in str(error) and repr(missing) in str(error)
    assert "No such file or directory" in str(error)


@pytest.mark.parametrize(("url", "message"), [
    ("etcd://127.0.0.1:2379?ssl_ca=/ca.pem", "TLS options (ssl_ca) need an etcd+https:// URL"),
    ("etcd+https://127.0.0.1:2379?ssl_key=/k.pem", "ssl_key needs ssl_cert"),
])
def test_tls_options_that_cannot_work_are_an_invalid_url(url: str, message: str) -> None:
    with pytest.raises(conch.InvalidURL, match=re.escape(message)):
        conch.Coordinator(url)
