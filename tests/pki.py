"""
A throwaway public-key infrastructure for tests: one CA, and server and client
certificates issued by it, written as PEM files into a directory.

Typical use::

    pki = PKI(self.mktemp())
    cert, key = pki.serverCertificate("localhost", "127.0.0.1")
    clientCert, clientKey = pki.clientCertificate("alice")
    ... pki.caPath ...   # trust this in clients, or verify clients against it

Every method returns paths (C{str}), so the results drop straight into
C{TLSSettings}, command lines and endpoint strings.
"""

from __future__ import annotations

import os

import trustme


class PKI:
    """
    A test CA and the certificates it issued, as files under C{directory}.

    @ivar ca: the underlying L{trustme.CA}, for anything not covered here.
    @ivar caPath: the CA certificate (PEM).
    """

    def __init__(self, directory: str, name: str = "netplugins test CA"):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA(organization_name=name)
        self.caPath = self._write("ca.pem", self.ca.cert_pem.bytes())
        self._serial = 0

    def _write(self, filename: str, data: bytes) -> str:
        path = os.path.join(self.directory, filename)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _name(self, stem: str) -> str:
        self._serial += 1
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in stem)
        return f"{self._serial}-{safe}"

    def serverCertificate(self, *names: str) -> tuple[str, str]:
        """
        Issue a server certificate for C{names} (DNS names or IP addresses, the
        first one also its common name).

        @return: (certificate with chain, private key) paths.
        """
        leaf = self.ca.issue_cert(*names, common_name=names[0])
        stem = self._name(names[0])
        certPath = self._write(
            f"{stem}-cert.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems)
        )
        keyPath = self._write(f"{stem}-key.pem", leaf.private_key_pem.bytes())
        return certPath, keyPath

    def serverPEM(self, directory: str, filename: str, *names: str) -> str:
        """
        Issue a server certificate for C{names} and write key, certificate and
        chain into one file C{directory/filename}: the layout a TLS directory
        (C{--tls-dir}, Twisted's C{tls:} endpoint) reads.

        @return: the file's path.
        """
        os.makedirs(directory, exist_ok=True)
        leaf = self.ca.issue_cert(*names, common_name=names[0])
        path = os.path.join(directory, filename)
        with open(path, "wb") as f:
            f.write(leaf.private_key_and_cert_chain_pem.bytes())
        return path

    def clientCertificate(self, commonName: str, *identities: str) -> tuple[str, str]:
        """
        Issue a client certificate with subject CN C{commonName} and optional
        subject alternative names C{identities} (e.g. C{"alice@example.com"}).

        @return: (certificate with chain, private key) paths.
        """
        leaf = self.ca.issue_cert(
            *(identities or (f"{commonName}@example.invalid",)),
            common_name=commonName,
        )
        stem = self._name("client-" + commonName)
        certPath = self._write(
            f"{stem}-cert.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems)
        )
        keyPath = self._write(f"{stem}-key.pem", leaf.private_key_pem.bytes())
        return certPath, keyPath
