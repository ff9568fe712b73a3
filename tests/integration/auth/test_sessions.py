"""Browser sign-in end to end: cookies, new session ids, CSRF, forced password change, backoff,
timeouts, sign-out, and revocation by an administrator - each step audited."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from appliance.auth import accounts
from appliance.auth.sessions import SESSION_COOKIE
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import (
    PASSWORD,
    Browser,
    audit_actions,
    csrf_from,
    make_user,
    new_key,
    password_login,
)
from tests.support.browser import loopback_browser
from tests.support.windows import room_in_window


def _set_cookie(response: httpx.Response, name: str) -> str:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return headers[0]


def test_sign_in_sets_a_host_only_httponly_lax_cookie_with_a_new_id(
    appliance: RunningAppliance,
) -> None:
    user_id = make_user(appliance, "ada", "staff")
    first, response = password_login(appliance.url, "ada", PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = _set_cookie(response, SESSION_COOKIE)
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=lax"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    # Secure even over plain HTTP on loopback: browsers treat loopback as a secure origin and
    # refuse a `__Host-` cookie without it.
    assert "secure" in attributes
    second, again = password_login(appliance.url, "ada", PASSWORD)
    assert _set_cookie(again, SESSION_COOKIE) != cookie
    assert first.get("/api/v1/models").status_code == 200
    assert ("auth.login", f"user:{user_id}", "password") in audit_actions(appliance)
    first.close()
    second.close()


def test_cookies_are_secure_behind_a_tls_proxy(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    app = start_appliance(wait_ready=False, tls_terminated_by_proxy=True)
    login_page = httpx.get(f"{app.url}/login", timeout=30)
    attributes = _set_cookie(login_page, "__Host-appliance-csrf").lower().split("; ")
    assert "secure" in attributes and "httponly" in attributes


def test_login_form_needs_its_csrf_token(appliance: RunningAppliance) -> None:
    make_user(appliance, "ada", "staff")
    client = loopback_browser(appliance.url, timeout=30, follow_redirects=False)
    client.get("/login")
    response = client.post("/login", data={"username": "ada", "password": PASSWORD})
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    client.close()


def test_state_changing_requests_need_the_session_csrf_token(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    browser = browser_for(appliance, "admin")
    body = {"username": "bob", "role": "staff"}
    refused = browser.client.post("/api/v1/admin/users", json=body)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    wrong = browser.client.post("/api/v1/admin/users", json=body, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    created = browser.post("/api/v1/admin/users", json=body)
    assert created.status_code == 201, created.text
    # The token rides on <body hx-headers> of every page for htmx.
    page = browser.client.get("/", headers={"Accept": "text/html"})
    assert f'hx-headers=\'{{"X-CSRF-Token": "{browser.csrf}"}}\'' in page.text
    # Safe methods need no token.
    assert browser.client.get("/api/v1/admin/users").status_code == 200


def test_bootstrap_admin_must_change_its_password_first(appliance: RunningAppliance) -> None:
    password = accounts.ensure_first_admin(appliance.services.engine)
    assert password is not None
    client, response = password_login(appliance.url, "admin", password)
    assert response.status_code == 303
    assert response.headers["location"] == "/account/password"
    api = client.get("/api/v1/admin/users")
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "password_change_required"
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/account/password"

    form = client.get("/account/password")
    token = csrf_from(form.text)
    short = client.post(
        "/account/password",
        data={"current_password": password, "password": "short", "csrf_token": token},
    )
    assert short.status_code == 422
    changed = client.post(
        "/account/password",
        data={
            "current_password": password,
            "password": "a brand new password",
            "csrf_token": token,
        },
    )
    assert changed.status_code == 303
    # The old session ended with the change; the browser got a fresh one.
    assert client.get("/api/v1/admin/users").status_code == 200
    actions = [a for a, _, _ in audit_actions(appliance)]
    assert "user.password_changed" in actions
    client.close()


def test_failed_logins_back_off_and_lock(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(wait_ready=False, login_max_failures=4, login_rate_per_minute=50)
    user_id = make_user(app, "ada", "staff")
    client = loopback_browser(app.url, timeout=30, follow_redirects=False)

    def attempt(password: str) -> httpx.Response:
        token = csrf_from(client.get("/login").text)
        return client.post(
            "/login", data={"username": "ada", "password": password, "csrf_token": token}
        )

    statuses = [attempt("wrong password").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    throttled = attempt(PASSWORD)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    outcomes = [o for a, actor, o in audit_actions(app) if a == "auth.login_failed"]
    assert outcomes[:3] == ["bad_password"] * 3 and outcomes[-1] == "locked"
    assert all(
        actor == f"user:{user_id}" for a, actor, _ in audit_actions(app) if a == "auth.login_failed"
    )
    client.close()


def test_login_rate_limit_per_address(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(wait_ready=False, login_rate_per_minute=3)
    client = loopback_browser(app.url, timeout=30, follow_redirects=False)
    room_in_window(20)  # the four sign-ins in one window
    statuses = []
    for n in range(4):
        token = csrf_from(client.get("/login").text)
        statuses.append(
            client.post(
                "/login", data={"username": f"user{n}", "password": "x" * 12, "csrf_token": token}
            )
        )
    assert [r.status_code for r in statuses] == [401, 401, 401, 429]
    assert int(statuses[-1].headers["Retry-After"]) > 0
    client.close()


def test_idle_timeout_ends_the_session(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(wait_ready=False, session_idle_timeout_s=1)
    make_user(app, "ada", "staff")
    client, _ = password_login(app.url, "ada", PASSWORD)
    assert client.get("/api/v1/models").status_code == 200
    time.sleep(2.1)
    assert client.get("/api/v1/models").status_code == 401
    client.close()


def test_absolute_timeout_ends_an_active_session(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    app = start_appliance(wait_ready=False, session_absolute_timeout_s=2)
    make_user(app, "ada", "staff")
    client, _ = password_login(app.url, "ada", PASSWORD)
    deadline = time.monotonic() + 10
    while client.get("/api/v1/models").status_code == 200:
        assert time.monotonic() < deadline, "the session outlived its absolute timeout"
        time.sleep(0.3)
    assert client.get("/api/v1/models").status_code == 401
    client.close()


def test_logout_ends_the_session_at_once(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    browser = browser_for(appliance, "staff")
    stolen = browser.client.cookies.get(SESSION_COOKIE)
    out = browser.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    replay = httpx.get(
        f"{appliance.url}/api/v1/models", cookies={SESSION_COOKIE: stolen or ""}, timeout=10
    )
    assert replay.status_code == 401
    assert ("auth.logout", f"user:{browser.user_id}", "ok") in audit_actions(appliance)


def test_disabling_a_user_ends_sessions_and_keys_at_once(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    admin = browser_for(appliance, "admin")
    staff = browser_for(appliance, "staff")
    staff_key = new_key(appliance, ["chat"], owner_id=staff.user_id)
    keyed = {"Authorization": f"Bearer {staff_key}"}
    assert httpx.get(f"{appliance.url}/api/v1/models", headers=keyed).status_code == 200
    assert staff.client.get("/api/v1/models").status_code == 200

    response = admin.client.patch(
        f"/api/v1/admin/users/{staff.user_id}",
        json={"disabled": True},
        headers={"X-CSRF-Token": admin.csrf},
    )
    assert response.status_code == 200, response.text
    assert response.json()["user"]["disabled"] is True
    assert staff.client.get("/api/v1/models").status_code == 401
    assert httpx.get(f"{appliance.url}/api/v1/models", headers=keyed).status_code == 401
    actions = audit_actions(appliance)
    names = [a for a, _, _ in actions]
    assert {"user.disabled", "session.revoked", "apikey.revoked", "apikey.denied"} <= set(names)
    client, login = password_login(appliance.url, "staff-1", PASSWORD)
    assert login.status_code == 401
    client.close()


def test_role_change_applies_at_once(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    admin = browser_for(appliance, "admin")
    staff = browser_for(appliance, "staff")
    response = admin.client.patch(
        f"/api/v1/admin/users/{staff.user_id}",
        json={"role": "auditor"},
        headers={"X-CSRF-Token": admin.csrf},
    )
    assert response.json()["user"]["role"] == "auditor"
    # The user signs in again and now has the auditor's rights, not the staff's.
    assert staff.client.get("/api/v1/models").status_code == 401
    client, _ = password_login(appliance.url, "staff-1", PASSWORD)
    assert client.get("/api/v1/models").status_code == 403
    assert client.get("/api/v1/audit/events").status_code == 200
    assert any(a == "user.role_changed" for a, _, _ in audit_actions(appliance))
    client.close()
