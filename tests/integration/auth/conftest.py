"""Signed-in browsers for the identity tests: real sign-in through the login form."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlmodel import select

from appliance.auth import accounts
from appliance.auth.identity import Caller, Identity
from appliance.db.engine import session_scope
from appliance.db.models import AuditEvent, User
from tests.conftest import RunningAppliance
from tests.support.browser import loopback_browser

PASSWORD = "a long test password"
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Browser:
    """A signed-in browser: cookies kept, the session's CSRF token at hand."""

    client: httpx.Client
    user_id: str
    csrf: str

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        """A state-changing request as htmx sends it (token in `X-CSRF-Token`)."""
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return self.client.post(path, headers=headers, **kwargs)  # type: ignore[arg-type]


def csrf_from(html: str) -> str:
    match = _CSRF_INPUT.search(html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


def password_login(
    base_url: str, username: str, password: str
) -> tuple[httpx.Client, httpx.Response]:
    """Sign in through the form; returns the browser and the answer to the POST."""
    client = loopback_browser(base_url, timeout=60, follow_redirects=False)
    form = client.get("/login")
    assert form.status_code == 200
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(form.text)},
    )
    return client, response


def make_user(
    app: RunningAppliance,
    username: str,
    role: str,
    *,
    forced: bool = False,
    reviewer: bool = False,
) -> str:
    """A local account with a known password (no forced change unless asked)."""
    engine = app.services.engine
    user, _ = accounts.create_user(engine, username=username, role=role, password=PASSWORD)
    if reviewer:
        accounts.set_reviewer(engine, user.id, True)
    if not forced:
        with session_scope(engine) as session:
            row = session.exec(select(User).where(User.id == user.id)).one()
            row.must_change_password = False
            session.add(row)
    return user.id


@pytest.fixture
def browser_for(
    start_appliance: Callable[..., RunningAppliance],
) -> Iterator[Callable[..., Browser]]:
    """Sign a new user with `role` in to an app; closes the browsers afterwards."""
    opened: list[httpx.Client] = []

    def sign_in(app: RunningAppliance, role: str, *, reviewer: bool = False) -> Browser:
        username = f"{role}-{len(opened)}"
        user_id = make_user(app, username, role, reviewer=reviewer)
        client, response = password_login(app.url, username, PASSWORD)
        opened.append(client)
        assert response.status_code == 303, response.text
        page = client.get("/account/password")
        assert page.status_code == 200, page.text
        return Browser(client, user_id, csrf_from(page.text))

    yield sign_in
    for client in opened:
        client.close()


def identity(app: RunningAppliance) -> Identity:
    """The running app's `Identity`."""
    found: Identity = app.server.app.state.identity
    return found


def new_key(app: RunningAppliance, scopes: list[str], owner_id: str | None = None) -> str:
    """A fresh API key with `scopes`."""
    _, key = identity(app).create_key_sync(
        name="t",
        scopes=scopes,
        policy=None,
        expires_days=None,
        owner_id=owner_id,
        actor="test",
        caller=Caller(),
    )
    return key


def audit_actions(app: RunningAppliance) -> list[tuple[str, str, str]]:
    """(action, actor, outcome) of every audit row, oldest first."""
    with session_scope(app.services.engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()  # type: ignore[arg-type]
        return [(r.action, r.actor, r.outcome) for r in rows]
