"""An httpx client that keeps cookies the way a browser does for a loopback origin.

The app's cookies are always `Secure` (`__Host-` cookies must be). Browsers treat
`http://127.0.0.1` and `http://localhost` as secure origins and send such cookies back over plain
HTTP there; Python's cookie jar only sends them over https. This client does what the browser does,
and only for a loopback base URL.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import httpx


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackBrowser(httpx.Client):
    """httpx.Client that sends its `Secure` cookies over plain HTTP to a loopback base URL.

    httpx copies the client's cookies into fresh jars for every request (with the standard
    policy, which holds `Secure` cookies back from http), so the copies it sends are unmarked.
    """

    def __init__(self, *, base_url: str, **kwargs: Any) -> None:
        host = httpx.URL(base_url).host
        if not _loopback(host):
            raise ValueError(f"{base_url} is not a loopback URL")
        super().__init__(base_url=base_url, **kwargs)

    def _merge_cookies(self, cookies: Any = None) -> Any:
        merged = httpx.Cookies()
        for cookie in self.cookies.jar:
            sent = copy.copy(cookie)
            sent.secure = False
            merged.jar.set_cookie(sent)
        merged.update(cookies)
        return merged


def loopback_browser(base_url: str, **kwargs: Any) -> httpx.Client:
    """An httpx.Client for `base_url` (a loopback URL) whose cookies behave as in a browser."""
    return LoopbackBrowser(base_url=base_url, **kwargs)
