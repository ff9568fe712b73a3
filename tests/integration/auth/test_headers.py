"""Security headers on every page a signed-in user can reach, and on public ones."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser
from tests.support.browser import loopback_browser

_LINK = re.compile(r'(?:href|hx-get)="(/[^"]*)"')


def check_headers(response: httpx.Response, *, hsts: bool) -> None:
    headers = response.headers
    csp = headers["Content-Security-Policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";")}
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["object-src"] == "object-src 'none'"
    assert directives["base-uri"] == "base-uri 'none'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["default-src"] == "default-src 'self'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert ("Strict-Transport-Security" in headers) is hsts
    if hsts:
        assert "max-age=" in headers["Strict-Transport-Security"]


def crawl(client: httpx.Client, start: list[str]) -> dict[str, httpx.Response]:
    """Every same-origin page and partial linked from `start`, fetched once."""
    seen: dict[str, httpx.Response] = {}
    queue = list(start)
    while queue:
        path = queue.pop()
        if path in seen or path.startswith("/schema"):
            continue
        response = client.get(path, headers={"Accept": "text/html"})
        seen[path] = response
        if "text/html" in response.headers.get("content-type", ""):
            queue.extend(_LINK.findall(response.text))
    return seen


@pytest.mark.parametrize("role", ["staff", "admin", "auditor"])
def test_every_page_carries_the_security_headers(
    appliance: RunningAppliance,
    browser_for: Callable[[RunningAppliance, str], Browser],
    role: str,
) -> None:
    browser = browser_for(appliance, role)
    pages = crawl(browser.client, ["/", "/account/password", "/login"])
    assert {"/", "/ui/status", "/account/password", "/login", "/static/app.css"} <= set(pages)
    for path, response in pages.items():
        assert response.status_code == 200, path
        check_headers(response, hsts=False)
    # No inline script or style anywhere (the CSP would block it).
    for path, response in pages.items():
        if "text/html" in response.headers["content-type"]:
            assert "<script>" not in response.text and " style=" not in response.text, path
            assert "<style" not in response.text, path


def test_public_pages_redirects_and_errors_carry_them_too(appliance: RunningAppliance) -> None:
    client = loopback_browser(appliance.url, timeout=30, follow_redirects=False)
    responses = [
        client.get("/login"),
        client.get("/", headers={"Accept": "text/html"}),  # redirect to sign-in
        client.get("/api/v1/models"),  # 401
        client.get("/healthz"),
        client.get("/nowhere"),
    ]
    assert [r.status_code for r in responses] == [200, 303, 401, 200, 404]
    for response in responses:
        check_headers(response, hsts=False)
    client.close()


def test_hsts_when_a_proxy_terminates_tls(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    app = start_appliance(wait_ready=False, tls_terminated_by_proxy=True)
    for path in ("/login", "/healthz"):
        check_headers(httpx.get(f"{app.url}{path}", timeout=30), hsts=True)
