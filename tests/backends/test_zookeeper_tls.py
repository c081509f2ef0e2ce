"""zookeeper:// with use_ssl=true on a real ZooKeeper 3.8 serving TLS (client certificate
required, or wanted, or not asked for), through kazoo's options.

The contract's core runs over TLS too (``zookeeper-tls`` in tests/contract, with an
encrypted client key and digest credentials); these tests check that the key's password
never shows, the session over TLS, and one clear error for each way TLS goes wrong. A
failed start waits for ``connect_timeout`` (kazoo retries until then), so the failing
URLs set it to 1 s.
"""

from __future__ import annotations

import logging
import re
import time

import pytest

import conch
from tests.backends import tls_failures
from tests.backends.group_faults import cleaned_up
from tests.servers.zookeeper import ZooKeeperServer
from tests.tls import KEY_PASSWORD, PKI

WITHIN = 6.0
"""Seconds a failed start may take: ``connect_timeout`` (1 s) and a diagnosis."""


def test_the_key_password_never_shows_in_reprs_urls_or_logs(
    zookeeper_tls_url: str, lock_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with conch.connect(zookeeper_tls_url) as coordinator, coordinator.lock(lock_name):
        shown = [repr(coordinator), str(coordinator), coordinator.url]
    assert "keyfile_password=%2A%2A%2A" in coordinator.url
    assert "keyfile=" in coordinator.url and "client-encrypted.key" in coordinator.url
    assert not any(KEY_PASSWORD in text for text in [*shown, caplog.text])


def test_a_hold_outlives_the_session_timeout_over_tls(
    zookeeper_tls_server: ZooKeeperServer, lock_name: str
) -> None:
    with conch.connect(zookeeper_tls_server.url(timeout=1)) as coordinator, \
            coordinator.lock(lock_name) as lock:
        time.sleep(2)  # kazoo pings over TLS keep the session
        assert not lock.lost.is_set()


def _failing(server: ZooKeeperServer, **options: object) -> str:
    return server.url(None, None, connect_timeout=1, **options)


@pytest.mark.parametrize("case, expected", [
    ("wrong CA", tls_failures.WRONG_CA),
    ("stranger client certificate", tls_failures.CLIENT_CERTIFICATE_REFUSED),
    ("no client certificate", tls_failures.CLIENT_CERTIFICATE_MISSING),
    ("plain text to the TLS port", tls_failures.plain_to_tls("add use_ssl=true to the URL")),
    ("missing CA file", tls_failures.missing_file("ca", "/nonexistent/ca.pem")),
    ("wrong key password", re.escape("not a PEM certificate and key, or the key password "
                                     "is wrong")),
])
def test_each_tls_failure_is_one_clear_backend_unavailable(
    zookeeper_tls_server: ZooKeeperServer, pki: PKI, case: str, expected: str
) -> None:
    server = zookeeper_tls_server
    url = {
        "wrong CA": _failing(server, ca=pki.stranger_ca),
        "stranger client certificate": re.sub(
            r"&keyfile_password=[^&]*", "", _failing(server, certfile=pki.stranger_client_cert,
                                                     keyfile=pki.stranger_client_key)),
        "no client certificate": f"zookeeper://{server.hosts}?use_ssl=true&ca={pki.ca}"
                                 f"&connect_timeout=1",
        "plain text to the TLS port": f"zookeeper://{server.hosts}?connect_timeout=1",
        "missing CA file": _failing(server, ca="/nonexistent/ca.pem"),
        "wrong key password": _failing(server, keyfile_password="not-the-password"),
    }[case]
    # A bad file is found before kazoo tries: at once.
    within = 1.0 if case.startswith(("missing", "wrong key")) else WITHIN
    tls_failures.one_clear_error(url, server.hosts, expected, [KEY_PASSWORD], within=within)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client_auth", ["want", "none"])
def test_a_server_that_does_not_require_client_certificates_serves_conch_without_one(
    pki: PKI, client_auth: str, lock_name: str
) -> None:
    with cleaned_up(ZooKeeperServer(pki=pki, client_auth=client_auth).launch()) as server:
        without = f"zookeeper://{server.hosts}/no-cert?use_ssl=true&ca={pki.ca}"
        with conch.connect(without) as coordinator, coordinator.lock(lock_name) as lock:
            assert lock.held and lock.token is not None
        with conch.connect(server.url()) as coordinator, coordinator.lock(lock_name) as lock:
            assert lock.held  # a client certificate, checked (want) or ignored (none)
        wrong_ca = f"zookeeper://{server.hosts}?use_ssl=true&ca={pki.stranger_ca}" \
                   "&connect_timeout=1"
        tls_failures.one_clear_error(wrong_ca, server.hosts, tls_failures.WRONG_CA,
                                     within=WITHIN)


def test_tls_to_a_plain_port_says_the_server_does_not_speak_tls(
    zookeeper_tls_server: ZooKeeperServer,
) -> None:
    plain = f"127.0.0.1:{zookeeper_tls_server.plain_port}"
    url = _failing(zookeeper_tls_server).replace(zookeeper_tls_server.hosts, plain)
    tls_failures.one_clear_error(url, plain, tls_failures.NOT_TLS, [KEY_PASSWORD], within=WITHIN)


def test_verify_certs_false_accepts_a_server_certificate_no_ca_vouches_for(
    zookeeper_tls_server: ZooKeeperServer, pki: PKI, lock_name: str
) -> None:
    url = zookeeper_tls_server.url(ca=pki.stranger_ca, verify_certs="false")
    with conch.connect(url) as coordinator, coordinator.lock(lock_name) as lock:
        assert lock.held


@pytest.mark.parametrize(("query", "message"), [
    ("ca=/ca.pem", "TLS options (ca) need use_ssl=true"),
    ("use_ssl=maybe", "option use_ssl must be true or false, got 'maybe'"),
    ("use_ssl=true&certfile=/c.pem", "certfile and keyfile go together"),
    ("use_ssl=true&certfile=/c.pem&keyfile=/k.pem&keyfile_password=x&verify_certs=no"
     "&check_hostname=yes", "check_hostname=true needs verify_certs=true"),
    ("use_ssl=true&keyfile=/k.pem", "keyfile needs certfile (the client certificate)"),
])
def test_tls_options_that_cannot_work_are_an_invalid_url(query: str, message: str) -> None:
    with pytest.raises(conch.InvalidURL, match=re.escape(message)) as raised:
        conch.Coordinator(f"zookeeper://zk1:2181?{query}")
    assert "keyfile_password=x" not in str(raised.value)
