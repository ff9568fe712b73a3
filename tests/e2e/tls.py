"""The app over HTTPS on 127.0.0.1 with a throwaway self-signed certificate.

Browsers refuse `__Host-` cookies that are not `Secure`, and the app marks its cookies `Secure`
whenever the browser talks TLS to it; so the browser tests reach the app the way a site does
in production, over TLS, instead of plain HTTP.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar import Litestar

from tests.support.live import LiveServer


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TlsServer(LiveServer):
    """The app under uvicorn with TLS on a free loopback port; `url` is its https address."""

    def __init__(self, app: Litestar, directory: Path) -> None:
        super().__init__(app, tls=self_signed(directory))

    def __enter__(self) -> TlsServer:
        super().__enter__()
        return self
