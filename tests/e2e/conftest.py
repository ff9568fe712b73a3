"""Browser tests: Playwright driving Debian's Chromium against the real app on 127.0.0.1.

Every page a test opens is watched: any request to an origin other than 127.0.0.1 or localhost
is aborted and recorded, and the test fails. Screenshots of the main pages go to
`tests/artifacts/screenshots/` (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright
from playwright.sync_api import expect as _expect

from appliance.app import create_app
from appliance.auth import apikeys
from appliance.auth.roles import SCOPES
from appliance.config import Settings
from appliance.db.engine import upgrade
from appliance.inference.embedded import embedded_backend
from tests.conftest import RunningAppliance
from tests.e2e.tls import TlsServer
from tests.integration.auth.conftest import PASSWORD, make_user
from tests.support.recording import RecordingBackend

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The app under test serves a throwaway self-signed certificate (see tls.py).
    "--ignore-certificate-errors",
]
expect = _expect
# Pages wait on the real detector and models on two shared cores: allow them time.
expect.set_options(timeout=30_000)


@pytest.fixture
def start_app(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., RunningAppliance]]:
    """Start the real app over TLS (real detector, real models) on SQLite, with `overrides`.

    SQLite only: the pages are the same on PostgreSQL, which the API suites cover.
    """
    servers: list[TlsServer] = []
    clients: list[httpx.Client] = []

    def start(**overrides: Any) -> RunningAppliance:
        settings = make_settings(
            database_url=f"sqlite:///{tmp_path / f'appliance-{len(servers)}.db'}", **overrides
        )
        upgrade(settings.resolved_database_url)
        backend = RecordingBackend(embedded_backend(settings))
        app = create_app(settings, backends=[backend])
        server = TlsServer(app, tmp_path / f"tls-{len(servers)}").__enter__()
        servers.append(server)
        server.wait_ready()
        _, key = apikeys.create(
            app.state.appliance.engine, app.state.identity.pepper, name="e2e", scopes=list(SCOPES)
        )
        client = httpx.Client(
            base_url=server.url,
            timeout=120,
            verify=server.trust,
            headers={"Authorization": f"Bearer {key}"},
        )
        clients.append(client)
        return RunningAppliance(server.url, app.state.appliance, backend, server, client)

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def app(start_app: Callable[..., RunningAppliance]) -> RunningAppliance:
    """The app with default settings, over TLS."""
    return start_app()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (see .ci/run)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    yield browser
    browser.close()


class Egress:
    """Requests the pages tried to send to a non-local origin (aborted)."""

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self.tolerated: list[str] = []
        self.foreign_pages: set[str] = set()
        """Origins of third-party test tools (the OpenID provider's own login page loads a
        stylesheet from a CDN); their outbound requests are still aborted, but only the
        appliance's pages fail the test."""

    def route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or (parts.hostname or "") in LOCAL_HOSTS:
            route.continue_()
            return
        try:
            page = urlsplit(route.request.frame.url)
            origin = f"{page.scheme}://{page.netloc}"
        except Exception:
            origin = ""
        (self.tolerated if origin in self.foreign_pages else self.blocked).append(url)
        route.abort()


@pytest.fixture
def egress() -> Egress:
    """What the test's pages tried to send off the box."""
    return Egress()


@pytest.fixture
def new_page(chromium: Browser, egress: Egress) -> Iterator[Callable[[], Page]]:
    """Open pages in fresh browser contexts; fails the test on any non-local request."""
    contexts: list[BrowserContext] = []

    def open_page() -> Page:
        context = chromium.new_context(
            viewport={"width": 1360, "height": 900}, accept_downloads=True
        )
        context.set_default_timeout(30_000)
        context.route("**/*", egress.route)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and "Content Security" in msg.text
                else None
            ),
        )
        return page

    errors: list[str] = []
    yield open_page
    for context in contexts:
        context.close()
    assert egress.blocked == [], f"pages tried to reach non-local origins: {egress.blocked}"
    assert errors == [], f"script errors or CSP violations on the pages: {errors}"


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, app: RunningAppliance, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form."""
    page.goto(f"{app.url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def user_page(
    new_page: Callable[[], Page], app: RunningAppliance, role: str, username: str | None = None
) -> Page:
    """A page signed in as a new local user with `role`."""
    name = username or f"{role}-user"
    make_user(app, name, role)
    page = new_page()
    sign_in(page, app, name)
    expect(page).to_have_url(re.compile(r"/$"))
    return page
