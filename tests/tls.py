"""A throwaway PKI for the TLS tests, made with the ``openssl`` command.

:func:`make_pki` writes, in a directory: a test CA, a server certificate for
``127.0.0.1``/``localhost`` and a client certificate it signed, plus a *stranger* CA with a
client certificate of its own (a certificate the servers must refuse) and a copy of the
client key encrypted with :data:`KEY_PASSWORD`, and a client certificate without a
CommonName (etcd's JSON gateway refuses one with a CN once auth is on). The session
fixture ``pki`` (tests/conftest.py) makes one set for the whole run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import ssl
import subprocess

from tests.servers.base import require_binary

KEY_PASSWORD = "key-secret-6d1f"
"""The passphrase of :attr:`PKI.encrypted_client_key`."""

_NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclasses.dataclass(frozen=True)
class PKI:
    """Paths (as ``str``) of the files :func:`make_pki` wrote."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    encrypted_client_key: str
    stranger_ca: str
    stranger_client_cert: str
    stranger_client_key: str
    client_cert_without_cn: str
    client_key_without_cn: str

    def client_context(self, *, with_certificate: bool = True) -> ssl.SSLContext:
        """A client context trusting the test CA (presenting the client certificate)."""
        context = ssl.create_default_context(cafile=self.ca)
        if with_certificate:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def make_pki(directory: pathlib.Path) -> PKI:
    """Write a fresh CA, server, client and stranger certificates in ``directory``."""
    require_binary("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*argv: str) -> None:
        made = subprocess.run(["openssl", *argv], cwd=directory, capture_output=True, check=False)
        if made.returncode != 0:
            raise RuntimeError(f"openssl {argv[0]} failed: {made.stderr.decode()}")

    def authority(name: str) -> None:
        openssl("req", "-x509", *_NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-subj", f"/CN=conch test {name}")

    def signed(name: str, by: str, extensions: str, subject: str = "") -> None:
        (directory / f"{name}.ext").write_text(extensions)
        openssl("req", *_NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subject or f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{by}.pem", "-CAkey", f"{by}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext")

    authority("ca")
    authority("stranger-ca")
    signed("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
           "extendedKeyUsage=serverAuth,clientAuth\n")
    signed("client", "ca", "extendedKeyUsage=clientAuth\n")
    signed("stranger-client", "stranger-ca", "extendedKeyUsage=clientAuth\n")
    signed("client-without-cn", "ca", "subjectAltName=DNS:conch-client\n"
           "extendedKeyUsage=clientAuth\n", subject="/O=conch test client")
    openssl("pkey", "-in", "client.key", "-out", "client-encrypted.key", "-aes256",
            "-passout", f"pass:{KEY_PASSWORD}")
    path = {name: str(directory / name) for name in (
        "ca.pem", "server.pem", "server.key", "client.pem", "client.key",
        "client-encrypted.key", "stranger-ca.pem", "stranger-client.pem",
        "stranger-client.key", "client-without-cn.pem", "client-without-cn.key")}
    return PKI(
        ca=path["ca.pem"], server_cert=path["server.pem"], server_key=path["server.key"],
        client_cert=path["client.pem"], client_key=path["client.key"],
        encrypted_client_key=path["client-encrypted.key"], stranger_ca=path["stranger-ca.pem"],
        stranger_client_cert=path["stranger-client.pem"],
        stranger_client_key=path["stranger-client.key"],
        client_cert_without_cn=path["client-without-cn.pem"],
        client_key_without_cn=path["client-without-cn.key"],
    )
