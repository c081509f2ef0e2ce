"""etcd+https:// on a real etcd serving TLS only, with --client-cert-auth and auth on.

The contract's core runs over TLS too (``etcd-tls`` in tests/contract, with the client
certificate and user auth together); these tests check renewal over TLS and one clear
error for each way TLS goes wrong.
"""

from __future__ import annotations

import re
import time

import pytest

import conch
from tests.backends import tls_failures
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


@pytest.mark.parametrize("case, expected", [
    ("wrong CA", tls_failures.WRONG_CA),
    ("stranger client certificate", tls_failures.CLIENT_CERTIFICATE_REFUSED),
    # etcd 3.4 answers a missing certificate with the alert it sends for an untrusted one.
    ("no client certificate", tls_failures.CLIENT_CERTIFICATE_MISSING),
    ("client certificate with a CommonName, auth on", "use one without a CN"),
    ("plain text to the TLS port", tls_failures.plain_to_tls("use an etcd+https:// URL")),
    ("missing CA file", tls_failures.missing_file("ssl_ca", "/nonexistent/ca.pem")),
    ("missing client certificate file",
     tls_failures.missing_file("ssl_cert", "/nonexistent/c.pem")),
    ("missing key file", tls_failures.missing_file("ssl_key", "/nonexistent/k.pem")),
])
def test_each_tls_failure_is_one_clear_backend_unavailable(
    etcd_tls_server: EtcdServer, pki: PKI, case: str, expected: str
) -> None:
    server = etcd_tls_server
    url = {
        "wrong CA": server.url(ssl_ca=pki.stranger_ca),
        "stranger client certificate": server.url(ssl_cert=pki.stranger_client_cert,
                                                  ssl_key=pki.stranger_client_key),
        "no client certificate": f"etcd+https://{server.endpoint}?ssl_ca={pki.ca}",
        "client certificate with a CommonName, auth on": server.url(
            ssl_cert=pki.client_cert, ssl_key=pki.client_key),
        "plain text to the TLS port": f"etcd://root:{server.password}@{server.endpoint}",
        "missing CA file": server.url(ssl_ca="/nonexistent/ca.pem"),
        "missing client certificate file": server.url(ssl_cert="/nonexistent/c.pem"),
        "missing key file": server.url(ssl_key="/nonexistent/k.pem"),
    }[case]
    tls_failures.one_clear_error(url, f"etcd at {server.endpoint}", expected, within=WITHIN)


def test_tls_to_a_plain_port_says_the_server_does_not_speak_tls(
    etcd_server: EtcdServer, pki: PKI
) -> None:
    url = f"etcd+https://root:{etcd_server.password}@{etcd_server.endpoint}?ssl_ca={pki.ca}"
    tls_failures.one_clear_error(url, f"etcd at {etcd_server.endpoint}", tls_failures.NOT_TLS,
                                 within=WITHIN)


@pytest.mark.parametrize(("url", "message"), [
    ("etcd://127.0.0.1:2379?ssl_ca=/ca.pem", "TLS options (ssl_ca) need an etcd+https:// URL"),
    ("etcd+https://127.0.0.1:2379?ssl_key=/k.pem", "ssl_key needs ssl_cert"),
])
def test_tls_options_that_cannot_work_are_an_invalid_url(url: str, message: str) -> None:
    with pytest.raises(conch.InvalidURL, match=re.escape(message)):
        conch.Coordinator(url)
