"""Throwaway TLS certificates for the fake Live server's ``wss://`` mode."""

from __future__ import annotations

import subprocess
import uuid

__all__ = ["make_certificates"]


def make_certificates(directory: str) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made with openssl(1)."""

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30
        )

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=pi-agent fake Live CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(f"{directory}/server.ext", "w") as ext:
        ext.write(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", f"0x{uuid.uuid4().hex}", "-out", "server.pem", "-days", "2",
        "-extfile", "server.ext",
    )  # fmt: skip
    return f"{directory}/ca.pem", f"{directory}/server.pem", f"{directory}/server.key"
