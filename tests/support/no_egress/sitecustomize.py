"""Loaded by Python at start-up (via PYTHONPATH) in processes a test wants cut off from the
network: every connection or name lookup to anything but loopback is refused and recorded in the
file named by NO_EGRESS_LOG."""

import ipaddress
import os
import socket

_LOG = os.environ.get("NO_EGRESS_LOG", "")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _record(what: str) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(what + "\n")


def _is_local(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if not _is_local(host):
        _record(f"connect {address!r}")
        raise ConnectionRefusedError(f"outbound connection to {address!r} refused by the test")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def connect(self, address):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address)
    return _connect(self, address)


def connect_ex(self, address):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host is not None and not _is_local(host):
        _record(f"resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"name lookup of {host!r} refused by the test")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect  # type: ignore[method-assign]
socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = getaddrinfo
