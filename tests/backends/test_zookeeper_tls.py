"""zookeeper:// with use_ssl=true on a real ZooKeeper 3.8 serving TLS (client certificate
required), through kazoo's options.

The contract's core runs over TLS too (``zookeeper-tls`` in tests/contract, with an
encrypted client key and digest credentials); these tests check that the key's password
never shows, the session over TLS, and one clear error for each way TLS goes wrong. A
failed start waits for ``connect_timeout`` (kazoo retries until then), so the failing
URLs set it to 1 s.
"""

from __future__ import annotations

import logging
import pathlib
import re
import time

import pytest

import conch
from tests.backends.tls_errors import start_fails
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


def test_a_wrong_ca_is_one_clear_backend_unavailable(
    zookeeper_tls_server: ZooKeeperServer, pki: PKI
) -> None:
    error = start_fails(_failing(zookeeper_tls_server, ca=pki.stranger_ca), WITHIN)
    assert zookeeper_tls_server.hosts in str(error)
    assert "certificate verify failed: unable to get local issuer certificate" in str(error)


def test_a_client_certificate_of_another_ca_is_refused_clearly(
    zookeeper_tls_server: ZooKeeperServer, pki: PKI
) -> None:
    url = _failing(zookeeper_tls_server, certfile=pki.stranger_client_cert,
                   keyfile=pki.stranger_client_key)
    url = re.sub(r"&keyfile_password=[^&]*", "", url)
    error = start_fails(url, WITHIN)
    assert zookeeper_tls_server.hosts in str(error)
    assert "the server refused the client certificate" in str(error)


def test_no_client_certificate_where_one_is_required_is_named(
    zookeeper_tls_server: ZooKeeperServer, pki: PKI
) -> None:
    url = f"zookeeper://{zookeeper_tls_server.hosts}?use_ssl=true&ca={pki.ca}&connect_timeout=1"
    error = start_fails(url, WITHIN)
    assert zookeeper_tls_server.hosts in str(error)
    assert "requires" in str(error) and "client certificate" in str(error)


def test_plain_text_to_the_tls_port_says_to_add_use_ssl(
    zookeeper_tls_server: ZooKeeperServer,
) -> None:
    error = start_fails(f"zookeeper://{zookeeper_tls_server.hosts}?connect_timeout=1", WITHIN)
    assert str(error) == (f"cannot reach ZooKeeper at {zookeeper_tls_server.hosts} within 1 s "
                          f"(the server expects TLS on this port: add use_ssl=true to the URL)")


def test_tls_to_a_plain_port_says_the_server_does_not_speak_tls(
    zookeeper_tls_server: ZooKeeperServer, pki: PKI
) -> None:
    plain = f"127.0.0.1:{zookeeper_tls_server.plain_port}"
    url = _failing(zookeeper_tls_server).replace(zookeeper_tls_server.hosts, plain)
    error = start_fails(url, WITHIN)
    assert plain in str(error)
    assert "the server does not speak TLS on this port" in str(error)


def test_a_wrong_key_password_is_named_at_once(
    zookeeper_tls_server: ZooKeeperServer,
) -> None:
    url = _failing(zookeeper_tls_server, keyfile_password="not-the-password")
    error = start_fails(url, 1.0)
    assert "cannot load the client certificate" in str(error)
    assert "password is wrong or missing" in str(error)


def test_a_missing_ca_file_is_named_at_once(
    zookeeper_tls_server: ZooKeeperServer, tmp_path: pathlib.Path
) -> None:
    error = start_fails(_failing(zookeeper_tls_server, ca=tmp_path / "missing.pem"), 1.0)
    assert f"cannot read the CA file '{tmp_path / 'missing.pem'}'" in str(error)


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
])
def test_tls_options_that_cannot_work_are_an_invalid_url(query: str, message: str) -> None:
    with pytest.raises(conch.InvalidURL, match=re.escape(message)) as raised:
        conch.Coordinator(f"zookeeper://zk1:2181?{query}")
    assert "keyfile_password=x" not in str(raised.value)
