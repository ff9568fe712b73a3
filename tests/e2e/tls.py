"""The app over HTTPS on 127.0.0.1 with a throwaway self-signed certificate.

Browsers refuse `__Host-` cookies that are not `Secure`, and the app marks its cookies `Secure`
whenever the browser talks TLS to it; so the browser tests reach the app the way a site does
in production, over TLS, instead of plain HTTP.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar import Litestar


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


class TlsServer:
    """The app under uvicorn with TLS on a free loopback port; `url` is its https address."""

    def __init__(self, app: Litestar, directory: Path) -> None:
        self.app = app
        key, cert = self_signed(directory)
        self.trust = ssl.create_default_context(cafile=str(cert))
        """Trusts the certificate, for HTTP clients that check it."""
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                log_config=None,
                access_log=False,
                lifespan="on",
                ssl_keyfile=str(key),
                ssl_certfile=str(cert),
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> TlsServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        """Poll /readyz until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/readyz", timeout=5, verify=self.trust).status_code == 200:
                return
            time.sleep(0.05)
        raise RuntimeError("the app did not become ready")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
