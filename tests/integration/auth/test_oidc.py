"""Single sign-on against a real OpenID provider process on 127.0.0.1.

Success, then each rejection the relying party must make: tampered `state`, a replayed `nonce`
(and a replayed callback), an ID token from the wrong issuer, for the wrong audience, expired,
and a user whose groups map to no role. Every bad token below is issued and signed by the real
provider; the wrong issuer and audience are obtained by presenting the token request to it under
another host name or client id through a forwarding proxy (see `oidc_provider.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from sqlmodel import select

from appliance.auth.oidc import LOGIN_COOKIE
from appliance.auth.sessions import SESSION_COOKIE
from appliance.db.engine import session_scope
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import audit_actions
from tests.integration.auth.oidc_provider import provider, proxy
from tests.support.browser import loopback_browser

CLIENT_ID = "appliance"
USERS = {
    "alice": {"preferred_username": "alice", "groups": ["slm-staff"]},
    "carol": {"preferred_username": "carol", "groups": ["x", "slm-admins"]},
    "mallory": {"preferred_username": "mallory", "groups": ["visitors"]},
}


@dataclass
class Attempt:
    """One sign-in started at the appliance: the browser and the provider URL it was sent to."""

    browser: httpx.Client
    authorize_url: str
    login_cookie: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.authorize_url).query).items()}

    def authorize(self, sub: str, **override: str) -> str:
        """Sign in at the provider as `sub` (optionally with altered parameters); the callback."""
        parts = urlsplit(self.authorize_url)
        url = urlunsplit(parts._replace(query=urlencode({**self.params, **override})))
        answer = httpx.post(url, data={"sub": sub}, timeout=30)
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]

    def callback(self, url: str) -> httpx.Response:
        parts = urlsplit(url)
        return self.browser.get(f"{parts.path}?{parts.query}")

    def replay(self, url: str) -> httpx.Response:
        """The callback again, with the login cookie the first one cleared put back."""
        self.browser.cookies.set(LOGIN_COOKIE, self.login_cookie)
        return self.callback(url)


@pytest.fixture
def sso(
    start_appliance: Callable[..., RunningAppliance],
) -> Iterator[Callable[..., tuple[RunningAppliance, Callable[[], Attempt]]]]:
    browsers: list[httpx.Client] = []

    def start(issuer: str, **settings: object) -> tuple[RunningAppliance, Callable[[], Attempt]]:
        app = start_appliance(
            wait_ready=False,
            oidc_issuer=issuer,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret="client-secret",
            oidc_role_map={"slm-staff": "staff", "slm-admins": "admin"},
            **settings,
        )

        def begin() -> Attempt:
            browser = loopback_browser(app.url, timeout=30, follow_redirects=False)
            browsers.append(browser)
            response = browser.get("/auth/oidc/login")
            assert response.status_code == 303, response.text
            cookie = browser.cookies.get(LOGIN_COOKIE)
            assert cookie
            return Attempt(browser, response.headers["location"], cookie)

        return app, begin

    yield start
    for browser in browsers:
        browser.close()


def _failures(app: RunningAppliance) -> list[str]:
    return [outcome for action, _, outcome in audit_actions(app) if action == "auth.login_failed"]


def test_sign_in_succeeds_with_pkce_state_nonce_and_maps_groups_to_roles(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as issuer:
        app, begin = sso(issuer)
        attempt = begin()
        params = attempt.params
        assert params["client_id"] == CLIENT_ID and params["code_challenge_method"] == "S256"
        assert params["state"] and params["nonce"] and params["code_challenge"]
        assert params["redirect_uri"] == f"{app.url}/auth/oidc/callback"
        done = attempt.callback(attempt.authorize("alice"))
        assert done.status_code == 303, (done.text, audit_actions(app))
        assert done.headers["location"] == "/"
        assert SESSION_COOKIE in attempt.browser.cookies
        assert attempt.browser.get("/api/v1/models").status_code == 200
        assert attempt.browser.get("/api/v1/admin/users").status_code == 403

        admin = begin()
        assert admin.callback(admin.authorize("carol")).status_code == 303
        users = {u["username"]: u for u in app.client.get("/api/v1/admin/users").json()["users"]}
        assert users["alice"]["role"] == "staff" and users["alice"]["sso"] is True
        assert users["carol"]["role"] == "admin"
        assert [o for a, _, o in audit_actions(app) if a == "auth.login"] == ["oidc", "oidc"]


def test_tampered_state_is_rejected(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as issuer:
        app, begin = sso(issuer)
        attempt = begin()
        callback = attempt.authorize("alice")
        tampered = callback.replace(f"state={attempt.params['state']}", "state=forged")
        assert tampered != callback
        response = attempt.callback(tampered)
        assert response.status_code == 401
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
        # The attempt is spent: the genuine callback no longer works either.
        assert attempt.replay(callback).status_code == 401
        assert _failures(app) == ["state_mismatch", "unknown_or_used_attempt"]


def test_replayed_nonce_and_replayed_callback_are_rejected(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as issuer:
        app, begin = sso(issuer)
        first = begin()
        old_nonce = first.params["nonce"]
        callback = first.authorize("alice")
        assert first.callback(callback).status_code == 303
        assert first.replay(callback).status_code == 401  # the same callback again

        second = begin()
        # The provider issues an ID token carrying the earlier sign-in's nonce.
        replayed = second.callback(second.authorize("alice", nonce=old_nonce))
        assert replayed.status_code == 401
        assert SESSION_COOKIE not in second.browser.cookies
        assert _failures(app) == ["unknown_or_used_attempt", "nonce_mismatch"]


def test_id_token_from_another_issuer_is_rejected(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as upstream, proxy(upstream) as relay:
        issuer = f"http://127.0.0.1:{relay.server_port}"
        app, begin = sso(issuer)
        _control_passes(begin)
        relay.token_host = "idp.elsewhere.example"
        attempt = begin()
        assert attempt.callback(attempt.authorize("alice")).status_code == 401
        assert _failures(app) == ["wrong_issuer"]


def test_id_token_for_another_client_is_rejected(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as upstream, proxy(upstream) as relay:
        issuer = f"http://127.0.0.1:{relay.server_port}"
        app, begin = sso(issuer)
        _control_passes(begin)
        relay.token_client = (CLIENT_ID, "another-client")
        attempt = begin()
        callback = attempt.authorize("alice", client_id="another-client")
        assert attempt.callback(callback).status_code == 401
        assert _failures(app) == ["wrong_audience"]


def test_expired_id_token_is_rejected(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS, token_max_age=timedelta(minutes=-5)) as issuer:
        app, begin = sso(issuer)
        attempt = begin()
        assert attempt.callback(attempt.authorize("alice")).status_code == 401
        assert _failures(app) == ["expired"]


def test_issuer_must_match_the_discovery_document_exactly(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as issuer:
        app, _ = sso(issuer + "/")
        browser = loopback_browser(app.url, timeout=30, follow_redirects=False)
        assert browser.get("/auth/oidc/login").status_code == 401
        browser.close()


def test_user_without_a_mapped_group_is_refused(sso) -> None:  # type: ignore[no-untyped-def]
    with provider(USERS) as issuer:
        app, begin = sso(issuer)
        attempt = begin()
        assert attempt.callback(attempt.authorize("mallory")).status_code == 401
        assert _failures(app) == ["no_role"]
        names = [u["username"] for u in app.client.get("/api/v1/admin/users").json()["users"]]
        assert "mallory" not in names


def test_team_claim_sets_the_users_team_and_each_change_is_audited(sso) -> None:  # type: ignore[no-untyped-def]
    users = {
        "dana": {"preferred_username": "dana", "groups": ["slm-staff"], "department": ["legal"]},
        "eve": {"preferred_username": "eve", "groups": ["slm-staff"]},
    }
    with provider(users) as issuer:
        app, begin = sso(issuer, oidc_team_claim="department")
        for sub in ("dana", "eve"):
            attempt = begin()
            assert attempt.callback(attempt.authorize(sub)).status_code == 303

        def teams() -> dict[str, str | None]:
            listed = app.client.get("/api/v1/admin/users").json()["users"]
            return {u["username"]: u["team"] for u in listed}

        assert teams() == {"dana": "legal", "eve": None}
        # An admin's change lasts until the provider says otherwise: the claim wins at the next
        # sign-in; a token without the claim leaves the team alone.
        ids = {
            u["username"]: u["id"] for u in app.client.get("/api/v1/admin/users").json()["users"]
        }
        for name in ("dana", "eve"):
            moved = app.client.patch(f"/api/v1/admin/users/{ids[name]}", json={"team": "ops"})
            assert moved.status_code == 200, moved.text
        for sub in ("dana", "eve"):
            attempt = begin()
            assert attempt.callback(attempt.authorize(sub)).status_code == 303
        assert teams() == {"dana": "legal", "eve": "ops"}
        changes = [(actor.split(":")[0], target) for action, actor, target in _team_changes(app)]
        assert changes == [
            ("sso", f"user:{ids['dana']}"),
            ("apikey", f"user:{ids['dana']}"),
            ("apikey", f"user:{ids['eve']}"),
            ("sso", f"user:{ids['dana']}"),
        ]


def _team_changes(app: RunningAppliance) -> list[tuple[str, str, str | None]]:
    with session_scope(app.services.engine) as session:
        rows = session.exec(
            select(AuditEvent)
            .where(AuditEvent.action == "user.team_changed")
            .order_by(AuditEvent.seq)  # type: ignore[arg-type]
        ).all()
        return [(r.action, r.actor, r.target) for r in rows]


def _control_passes(begin: Callable[[], Attempt]) -> None:
    # The proxy alone changes nothing: a sign-in through it succeeds.
    attempt = begin()
    assert attempt.callback(attempt.authorize("alice")).status_code == 303
