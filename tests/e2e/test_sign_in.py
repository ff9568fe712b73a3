"""Signing in with a real browser: the bootstrap admin (forced password change), single
sign-on through the real test OpenID provider, and the idle-session warning."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page

from appliance.auth.accounts import ensure_first_admin
from tests.conftest import RunningAppliance
from tests.e2e.conftest import Egress, expect, screenshot, sign_in, user_page
from tests.integration.auth.oidc_provider import provider


def test_bootstrap_admin_signs_in_and_must_change_the_password(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    password = ensure_first_admin(app.services.engine)
    assert password
    page = new_page()
    page.goto(f"{app.url}/workspace")
    expect(page).to_have_url(re.compile(r"/login$"))
    screenshot(page, "login")
    sign_in(page, app, "admin", "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    sign_in(page, app, "admin", password)
    expect(page).to_have_url(re.compile(r"/account/password$"))
    page.get_by_label("Current password").fill(password)
    page.get_by_label("New password").fill("a brand new admin passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(re.compile(r"/$"))
    nav = page.get_by_role("navigation", name="Main")
    for item in ("Dashboard", "Policies", "Models", "Users & keys", "Workspace"):
        expect(nav.get_by_role("link", name=item)).to_be_visible()
    expect(nav.get_by_role("link", name="Audit trail")).to_have_count(0)
    screenshot(page, "home-admin")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))


def test_single_sign_on_through_the_test_provider(
    start_app: Callable[..., RunningAppliance], new_page: Callable[[], Page], egress: Egress
) -> None:
    users = {"alice": {"preferred_username": "alice", "groups": ["slm-auditors"]}}
    with provider(users) as issuer:
        egress.foreign_pages.add(issuer)
        app = start_app(
            oidc_issuer=issuer,
            oidc_client_id="appliance",
            oidc_client_secret="client-secret",
            oidc_role_map={"slm-auditors": "auditor"},
        )
        page = new_page()
        page.goto(f"{app.url}/login")
        page.get_by_role("link", name="Sign in with your organisation account").click()
        page.wait_for_url(f"{issuer}/**")
        page.locator("input[name=sub]").fill("alice")
        page.locator("form").first.evaluate("form => form.requestSubmit()")
        expect(page).to_have_url(re.compile(re.escape(app.url) + r"/$"))
        expect(page.locator(".who")).to_contain_text("alice")
        expect(page.get_by_role("link", name="Audit trail").first).to_be_visible()
        expect(page.get_by_role("link", name="Workspace")).to_have_count(0)


def test_idle_session_warning_appears_before_the_timeout(
    start_app: Callable[..., RunningAppliance], new_page: Callable[[], Page]
) -> None:
    app = start_app(session_idle_timeout_s=6)
    page = user_page(new_page, app, "staff")
    warning = page.locator("#session-warning")
    expect(warning).to_be_hidden()
    # Warned at half the idle time here (6 s), well before the session ends.
    expect(warning).to_be_visible(timeout=10_000)
    expect(warning).to_contain_text("Your session ends in")
    expect(warning.get_by_role("button", name="Stay signed in")).to_be_focused()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sign_in_over_plain_http_on_loopback(
    start_appliance: Callable[..., RunningAppliance], new_page: Callable[[], Page]
) -> None:
    """`make run` serves plain HTTP on 127.0.0.1: the browser must keep the `__Host-` cookies."""
    app = start_appliance(wait_ready=False)
    assert app.url.startswith("http://127.0.0.1:")
    page = user_page(new_page, app, "staff", "dev-user")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["__Host-appliance-session"]["secure"] is True
    page.goto(f"{app.url}/workspace")
    expect(page).to_have_url(re.compile(r"/workspace$"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
