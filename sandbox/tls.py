"""HTTPS for the Slack sandbox: a throwaway certificate authority, and a CA bundle that trusts it as well as the
system's roots.

Slack's API is only ever reached over HTTPS, and what a client's TLS costs (its context, the CA bundle it loads,
the handshake) shows only when the sandbox speaks it too. The bundle keeps every system root, so that loading it
costs what loading the system's costs; point SSL_CERT_FILE at it and OpenSSL's default verify paths use it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

HOST = "127.0.0.1"


class LoopbackCA:
    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._server = self._ca.issue_cert(HOST, "localhost")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server.configure_cert(context)
        return context

    def write_bundle(self, path: Path) -> Path:
        """The system's roots and this CA, in one PEM file at `path`: a value for SSL_CERT_FILE."""
        system = Path(ssl.get_default_verify_paths().openssl_cafile)  # OpenSSL's own, whatever SSL_CERT_FILE says
        roots = system.read_bytes() if system.is_file() else b""
        path.write_bytes(roots + b"\n" + self._ca.cert_pem.bytes())
        return path
