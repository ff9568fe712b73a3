"""Every route of the app, walked: each request writes exactly one audit row, allowed or refused.

The rule (README, "Audit trail"): every request to the app — the REST API, the OpenAI- and
Ollama-compatible endpoints and the web UI — writes one row, whether it is answered or refused.
A handler's own event is that row (`document.uploaded`, `completion.*`, `apikey.denied`...); a
request without one is `request.served` or `request.refused`. A request naming an object that
does not exist is a refused request (404) and is audited like any other refusal. Not audited,
as they are not requests in that sense: `UNAUDITED` below, each with its reason.

The routes come from `app.routes`, so a new route is walked without touching this file, and every
operation of the OpenAPI document must be among them. Each is called four ways: with no
credentials (401, or the sign-in redirect), as a principal its rule refuses (403), as one it
admits with a minimal body (allowed, or 400/404/422), and, for routes taking a body, with a body
over the size limit (413). Refusals by anonymous callers past `auth_failures_per_minute` are
counted in one aggregate row per address and minute; the walk raises that limit to stay under it,
and `test_an_anonymous_flood_is_counted_in_one_row` checks the bound.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from litestar.handlers import HTTPRouteHandler
from sqlalchemy import func
from sqlmodel import Session, select

from appliance.auth.roles import ACCESS_OPT, PUBLIC_OPT, SCOPES, Access
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser, new_key
from tests.integration.auth.conftest import browser_for as browser_for
from tests.support.windows import room_in_window

UNAUDITED = {
    "/healthz": "a liveness probe, polled by the supervisor",
    "/readyz": "a readiness probe, polled by the balancer",
    "/ui/status": "the home page's readiness probe, polled by htmx every 5 s while it is open",
    "/schema": "the public API description, not an action on the box",
    "/schema/openapi.json": "the public API description",
    "/schema/openapi.yaml": "the public API description",
    "/schema/openapi.yml": "the public API description",
    "/schema/{path:str}": "the API description's not-found page for its renderers",
    "/static/{file_path:path}": "stylesheets, scripts and images of the UI",
}
"""Routes that write no audit row, each with the reason."""

QUIET_WHEN_SERVED = {
    "/metrics": "Prometheus scrapes it every few seconds per replica; its refusals are audited",
}
"""Routes whose refusals are audited like any other, but whose served requests write no row."""

SEVERAL_CHANGES = {
    "/admin/eval/samples": (
        "eval.set_uploaded",
        "loads every shipped sample set at once; each new set is its own audited change",
    ),
}
"""Routes where one request makes several audited changes: one row per change, all of the
named event (a request that changes nothing still writes exactly one)."""

LAST = ("/logout",)
"""Walked after every other route: they end the session the walk signs in with."""

REAL_IDS = {"name": "default", "seq": "1"}
"""Path parameters given an existing object's id (a shipped policy, the trail's first row);
`doc_id` is a document uploaded by the walk. Any other is an id nothing has (404)."""
MISSING_ID = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"


@dataclass
class Caller:
    """One principal of the walk: a signed-in browser or an API key."""

    name: str
    kind: str
    role: str = ""
    scopes: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    browser: Browser | None = None
    key: str | None = None

    def admits(self, rule: Access) -> bool:
        """Whether the route's rule lets this principal in (as `Principal.allowed`)."""
        if self.kind == "user":
            if rule.permission is not None and rule.permission not in self.permissions:
                return False
            return self.role in rule.roles
        return bool(self.scopes & rule.scopes)

    def send(self, base_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request as this principal (a browser's state-changing one with its CSRF token)."""
        if self.browser is not None:
            headers = {"X-CSRF-Token": self.browser.csrf, **kwargs.pop("headers", {})}
            return self.browser.client.request(method, path, headers=headers, **kwargs)
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        with httpx.Client(base_url=base_url, timeout=120) as client:
            return client.request(method, path, headers=headers, **kwargs)


def anonymous(base_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request without credentials, as a browser asking for a page would send it."""
    headers = {"Accept": "text/html", **kwargs.pop("headers", {})}
    with httpx.Client(base_url=base_url, timeout=60, follow_redirects=False) as client:
        return client.request(method, path, headers=headers, **kwargs)


def head_seq(app: RunningAppliance) -> int:
    """The newest row's sequence number."""
    with Session(app.services.engine) as session:
        return int(session.exec(select(func.max(AuditEvent.seq))).one() or 0)


def rows_since(app: RunningAppliance, seq: int) -> list[AuditEvent]:
    """The rows appended after `seq`, oldest first."""
    with Session(app.services.engine) as session:
        statement = select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)  # type: ignore[arg-type]
        return list(session.exec(statement))


def one_row(
    app: RunningAppliance, send: Callable[..., httpx.Response], template: str = "", **kwargs: Any
) -> tuple[httpx.Response, AuditEvent]:
    """Send a request; its response and the one row it wrote (asserting there is exactly one)."""
    before = head_seq(app)
    response = send(**kwargs)
    rows = rows_since(app, before)
    label = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    several = SEVERAL_CHANGES.get(template)
    if several is not None and len(rows) > 1:
        assert {r.action for r in rows} == {several[0]}, f"{label} wrote {rows}"
        return response, rows[0]
    assert len(rows) == 1, f"{label} wrote {[(r.action, r.outcome) for r in rows]}"
    return response, rows[0]


@dataclass(frozen=True)
class Route:
    """One method of one route, with its access rule."""

    method: str
    template: str
    rule: Access | None
    body_limit: int | None = None

    def path(self, ids: dict[str, str]) -> str:
        """The template with each parameter filled in."""
        return re.sub(
            r"\{(\w+)(?::\w+)?\}", lambda m: ids.get(m.group(1), MISSING_ID), self.template
        )


def app_routes(app: RunningAppliance) -> list[Route]:
    """Every method of every route the app serves, OPTIONS (answered by Litestar) aside."""
    found = []
    for route in app.server.app.routes:
        for handler in route.route_handlers:
            if not isinstance(handler, HTTPRouteHandler):
                continue
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                rule = handler.opt.get(ACCESS_OPT)
                if handler.opt.get(PUBLIC_OPT) is not True:
                    assert isinstance(rule, Access), f"{route.path} declares no access rule"
                limit = handler.resolve_request_max_body_size()
                found.append(Route(method, route.path, rule, limit))
    # Reads before changes, so the document read is there to read before it is deleted.
    order = ("GET", "POST", "PUT", "PATCH", "DELETE")
    return sorted(set(found), key=lambda r: (r.template in LAST, r.template, order.index(r.method)))


@pytest.fixture
def walk_app(start_appliance: Callable[..., RunningAppliance]) -> RunningAppliance:
    """The app with the walk's own flood and rate limits raised (it sends a few hundred
    requests from one address in a minute)."""
    return start_appliance(auth_failures_per_minute=10_000, inference_rate_per_minute=10_000)


@pytest.fixture
def callers(
    walk_app: RunningAppliance, browser_for: Callable[..., Browser]
) -> Iterator[list[Caller]]:
    """Every kind of principal: an API key with every scope, two narrow keys, and the three
    roles signed in (staff as a reviewer)."""
    key = str(walk_app.client.headers["Authorization"]).removeprefix("Bearer ")
    found = [
        Caller("key:all", "apikey", scopes=frozenset(SCOPES), key=key),
        Caller("key:pii", "apikey", scopes=frozenset({"pii"}), key=new_key(walk_app, ["pii"])),
        Caller(
            "key:audit", "apikey", scopes=frozenset({"audit"}), key=new_key(walk_app, ["audit"])
        ),
    ]
    for role in ("admin", "auditor", "staff"):
        browser = browser_for(walk_app, role, reviewer=role == "staff")
        permissions = frozenset({"reviewer"}) if role == "staff" else frozenset()
        found.append(Caller(role, "user", role=role, permissions=permissions, browser=browser))
    yield found


def _minimal_body(route: Route, caller: Caller | None) -> dict[str, Any]:
    if route.method in ("GET", "DELETE"):
        return {}
    if caller is not None and caller.browser is not None and not route.template.startswith(API):
        return {"data": {}}
    return {"json": {}}


API = ("/api/", "/v1/", "/ollama/")


def test_every_route_writes_one_row_per_request(
    walk_app: RunningAppliance, callers: list[Caller]
) -> None:
    app = walk_app
    routes = app_routes(app)
    templates = {r.template for r in routes}
    for path in [*UNAUDITED, *QUIET_WHEN_SERVED]:
        assert path in templates, f"the allowlisted route {path} no longer exists: remove it"

    # Every operation of the API description is among the routes walked.
    schema = app.client.get("/schema/openapi.json").json()
    plain = {re.sub(r":\w+\}", "}", r.template) for r in routes}
    for path in schema["paths"]:
        assert path in plain, f"{path} is in the OpenAPI document but not walked"
    assert any(p.startswith("/v1/") for p in schema["paths"])
    assert any(p.startswith("/ollama/") for p in schema["paths"])

    _, uploaded = one_row(
        app,
        lambda: app.client.post("/api/v1/documents", files={"file": ("note.txt", b"A note.")}),
    )
    assert uploaded.action == "document.uploaded"
    ids = REAL_IDS | {"doc_id": str(uploaded.target).removeprefix("document:")}

    walked: list[tuple[str, str, str, int, str]] = []
    for route in routes:
        walked.extend(walk(app, route, route.path(ids), callers))

    assert len(walked) > 300, len(walked)
    actions = {action for *_, action in walked}
    assert actions >= {"request.served", "request.refused", "apikey.denied"}, actions


def walk(
    app: RunningAppliance, route: Route, path: str, callers: list[Caller]
) -> list[tuple[str, str, str, int, str]]:
    """Call one route every way that applies; each call writes one row. Returns what was seen."""
    walked: list[tuple[str, str, str, int, str]] = []
    template = route.template
    if template in UNAUDITED:
        before = head_seq(app)
        response = anonymous(app.url, route.method, path)
        assert response.status_code < 500, (route, response.text)
        assert rows_since(app, before) == [], f"{template} is allowlisted yet audited"
        return walked
    rule = route.rule
    send = partial(anonymous, app.url, route.method, path)  # a public route: as anyone
    who = "anonymous"
    if rule is not None:
        # No credentials: refused (401, or the sign-in page for a browser), one row.
        response, row = one_row(app, send, template)
        assert response.status_code in (303, 401), (route, response.status_code)
        assert (row.actor, row.status_code) == ("anonymous", 401), (route, row)
        walked.append((route.method, template, who, 401, row.action))
        # A principal the rule does not admit: 403, one row.
        refused = next(c for c in callers if not c.admits(rule))
        response, row = one_row(
            app,
            partial(refused.send, app.url, route.method, path),
            template,
            **_minimal_body(route, refused),
        )
        assert response.status_code == 403, (route, refused.name, response.text)
        assert row.status_code == 403, (route, row)
        assert row.action in ("apikey.denied", "request.refused", "completion.rejected")
        walked.append((route.method, template, refused.name, 403, row.action))
        admitted = next(c for c in callers if c.admits(rule))
        send = partial(admitted.send, app.url, route.method, path)
        who = admitted.name
    # A body over the size limit: 413, one row (upload routes, with limits of their own in
    # megabytes, check the setting's limit once the file is read; not sent here).
    limit = app.services.settings.max_body_bytes
    if route.method in ("POST", "PUT", "PATCH") and route.body_limit == limit:
        big = b"x" * (limit + 1)
        response, row = one_row(
            app, send, template, content=big, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413, (route, who, response.status_code)
        assert (row.status_code, row.outcome) == (413, "payload_too_large"), (route, row)
        walked.append((route.method, template, who, 413, row.action))
    # A principal the rule admits, with a minimal body: allowed or refused, one row.
    admitted_caller = next((c for c in callers if c.name == who), None)
    if template in QUIET_WHEN_SERVED:
        before = head_seq(app)
        response = send(**_minimal_body(route, admitted_caller))
        assert response.status_code == 200, (route, who, response.text)
        assert rows_since(app, before) == [], f"{template} is served quietly yet audited"
        return walked
    response, row = one_row(app, send, template, **_minimal_body(route, admitted_caller))
    assert response.status_code < 500, (route, who, response.text)
    walked.append((route.method, template, who, response.status_code, row.action))
    return walked


def test_an_answered_model_call_writes_its_own_row_only(appliance: RunningAppliance) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    response, row = one_row(appliance, appliance.client.post, url="/api/v1/chat", json=body)
    assert response.status_code == 200, response.text
    assert row.action.startswith("completion.") and row.status_code == 200

    def stream() -> httpx.Response:
        with appliance.client.stream(
            "POST", "/v1/chat/completions", json=body | {"stream": True, "model": "smollm2-135m"}
        ) as streamed:
            streamed.read()
            return streamed

    response, row = one_row(appliance, stream)
    assert response.status_code == 200
    assert row.action.startswith("completion.") and row.status_code == 200


def test_other_refusals_write_one_row(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(inference_rate_per_minute=1)

    # Rate limited (429): the first call is served, the second refused; a row each.
    _, row = one_row(app, app.client.get, url="/api/v1/tasks")
    assert (row.action, row.status_code) == ("request.served", 200)
    response, row = one_row(app, app.client.get, url="/api/v1/tasks")
    assert response.status_code == 429
    assert (row.action, row.outcome, row.status_code) == ("request.refused", "rate_limited", 429)

    # htmx without a session: sent to the sign-in page (HX-Redirect), refused as 401.
    response, row = one_row(
        app, partial(anonymous, app.url, "GET", "/history"), headers={"HX-Request": "true"}
    )
    assert response.headers.get("HX-Redirect") == "/login"
    assert (row.actor, row.action, row.status_code) == ("anonymous", "request.refused", 401)

    # A wrong Authorization scheme, a preflight, a path under the API that matches no route.
    response, row = one_row(
        app, app.client.get, url="/api/v1/documents", headers={"Authorization": "Basic eDp5"}
    )
    assert (response.status_code, row.status_code) == (401, 401)
    _, row = one_row(app, partial(anonymous, app.url, "OPTIONS", "/api/v1/documents"))
    assert row.action == "request.refused"
    response, row = one_row(app, app.client.get, url="/api/v1/no-such-route")
    assert (response.status_code, row.target, row.status_code) == (404, "(unrouted)", 404)
    assert row.actor.startswith("apikey:") or row.actor == "anonymous"

    # A path outside the API that matches no route (a browser's favicon probe): no row.
    before = head_seq(app)
    assert anonymous(app.url, "GET", "/favicon.ico").status_code == 404
    assert rows_since(app, before) == []


def test_an_anonymous_flood_is_counted_in_one_row(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    app = start_appliance(auth_failures_per_minute=5)
    bound = app.server.app.state.request_audit.anonymous
    bound.window_s = 8.0  # a short window, so the aggregate row is written within the test
    room_in_window(7.0, window_s=bound.window_s)  # so that the flood falls in one window

    before = head_seq(app)
    for _ in range(25):
        assert anonymous(app.url, "GET", "/api/v1/documents").status_code == 401
    rows = rows_since(app, before)
    assert [(r.action, r.status_code) for r in rows] == [("request.refused", 401)] * 5

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(rows_since(app, before)) == 5:
        time.sleep(0.2)
    aggregate = rows_since(app, before)[5:]
    assert [(r.action, r.outcome, r.source) for r in aggregate] == [
        ("request.refused", "flood", "127.0.0.1")
    ]
    assert aggregate[0].details == {"count": 20, "window_s": 8}

    # A signed-in caller from the same address is audited a row a request all along.
    _, row = one_row(app, app.client.get, url="/api/v1/documents")
    assert row.action == "request.served"
