"""Every route declares who may call it, and the app enforces exactly the role x route matrix.

`MATRIX` is the access table written out by hand. The first test fails for any route of
`create_app()` that declares no rule (and checks that such a route is refused); the second fails
when a declared rule differs from the table (a new route must be added to it); the third calls
every route as every kind of principal against the running app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from appliance.auth.guards import enforce_access
from appliance.auth.roles import ACCESS_OPT, PUBLIC_OPT, SCOPES, Access
from appliance.http.errors import EXCEPTION_HANDLERS
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser, new_key

PUBLIC = "public"
STAFF, ADMIN, AUDITOR = "staff", "admin", "auditor"
ALL_ROLES = (STAFF, ADMIN, AUDITOR)
REVIEWER = "staff+reviewer"
"""A staff account holding the reviewer permission (rules with `permission="reviewer"`)."""

# (method, path) -> PUBLIC, or (roles a browser session needs, scopes an API key needs: any one).
MATRIX: dict[tuple[str, str], Any] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): ((ADMIN,), ("metrics",)),
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/auth/oidc/login"): PUBLIC,
    ("GET", "/auth/oidc/callback"): PUBLIC,
    ("GET", "/"): (ALL_ROLES, ()),
    ("GET", "/ui/status"): (ALL_ROLES, ()),
    ("GET", "/account/password"): (ALL_ROLES, ()),
    ("POST", "/account/password"): (ALL_ROLES, ()),
    ("POST", "/logout"): (ALL_ROLES, ()),
    ("POST", "/api/v1/chat"): ((STAFF, ADMIN), ("chat",)),
    ("GET", "/api/v1/models"): ((STAFF, ADMIN), ("admin", "chat", "tasks")),
    ("GET", "/api/v1/models/pulls"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/models/pulls"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/models/pulls/{pull_id:str}"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/pii/analyze"): ((STAFF, ADMIN), ("pii",)),
    ("POST", "/api/v1/pii/redact"): ((STAFF, ADMIN), ("pii",)),
    ("GET", "/api/v1/tasks"): ((STAFF, ADMIN), ("tasks",)),
    ("POST", "/api/v1/tasks/{name:str}"): ((STAFF, ADMIN), ("tasks",)),
    ("GET", "/api/v1/usage/summary"): ((ADMIN, AUDITOR), ("admin", "audit")),
    ("GET", "/api/v1/usage/monthly"): ((ADMIN, AUDITOR), ("admin", "audit")),
    ("GET", "/api/v1/usage/budget"): ((ADMIN, AUDITOR), ("admin", "audit")),
    ("PUT", "/api/v1/usage/budget"): ((ADMIN,), ("admin",)),
    # The review queue: reviewers' browser sessions only (never keys, never admins).
    ("GET", "/api/v1/review/items"): ((REVIEWER,), ()),
    ("GET", "/api/v1/review/items/{item_id:str}"): ((REVIEWER,), ()),
    ("POST", "/api/v1/review/items/{item_id:str}/accept"): ((REVIEWER,), ()),
    ("POST", "/api/v1/review/items/{item_id:str}/correct"): ((REVIEWER,), ()),
    ("POST", "/api/v1/review/items/{item_id:str}/golden"): ((REVIEWER,), ()),
    ("GET", "/review"): ((REVIEWER,), ()),
    ("GET", "/review/{item_id:str}"): ((REVIEWER,), ()),
    ("POST", "/review/{item_id:str}/accept"): ((REVIEWER,), ()),
    ("POST", "/review/{item_id:str}/correct"): ((REVIEWER,), ()),
    ("POST", "/review/{item_id:str}/golden"): ((REVIEWER,), ()),
    ("GET", "/admin/costs"): ((ADMIN,), ()),
    ("POST", "/admin/costs/budget"): ((ADMIN,), ()),
    # The evaluation workbench: admins and admin-scoped keys.
    ("GET", "/api/v1/eval/sets"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/eval/sets"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/eval/sets/{name:str}"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/eval/sets/{name:str}/items"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/eval/runs"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/eval/runs"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/eval/runs/{run_id:str}"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/eval/runs/{run_id:str}/apply"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/eval/routing"): ((ADMIN,), ("admin",)),
    ("GET", "/admin/eval"): ((ADMIN,), ()),
    ("POST", "/admin/eval/sets"): ((ADMIN,), ()),
    ("POST", "/admin/eval/samples"): ((ADMIN,), ()),
    ("POST", "/admin/eval/runs"): ((ADMIN,), ()),
    ("GET", "/admin/eval/runs/{run_id:str}"): ((ADMIN,), ()),
    ("GET", "/admin/eval/runs/{run_id:str}/progress"): ((ADMIN,), ()),
    ("POST", "/admin/eval/runs/{run_id:str}/apply"): ((ADMIN,), ()),
    ("GET", "/api/v1/audit/checkpoints"): ((AUDITOR,), ("audit",)),
    ("GET", "/api/v1/audit/events"): ((AUDITOR,), ("audit",)),
    ("GET", "/api/v1/audit/export"): ((AUDITOR,), ("audit",)),
    ("GET", "/api/v1/audit/public-key"): ((AUDITOR,), ("audit",)),
    ("GET", "/api/v1/audit/verify"): ((AUDITOR,), ("audit",)),
    ("GET", "/api/v1/admin/users"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/admin/users"): ((ADMIN,), ("admin",)),
    ("PATCH", "/api/v1/admin/users/{user_id:str}"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/admin/users/{user_id:str}/revoke"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/admin/keys"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/admin/keys"): ((ADMIN,), ("admin",)),
    ("PATCH", "/api/v1/admin/keys/{key_id:str}"): ((ADMIN,), ("admin",)),
    ("DELETE", "/api/v1/admin/keys/{key_id:str}"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/policies"): ((ADMIN,), ("admin",)),
    ("PUT", "/api/v1/policies/assignments"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/policies/{name:str}"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/policies/{name:str}/activate"): ((ADMIN,), ("admin",)),
    ("GET", "/api/v1/policies/{name:str}/diff"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/policies/{name:str}/rollback"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/policies/{name:str}/versions"): ((ADMIN,), ("admin",)),
    ("POST", "/api/v1/batches"): ((STAFF, ADMIN), ("tasks",)),
    ("GET", "/api/v1/batches/{job_id:str}"): ((STAFF, ADMIN), ("tasks",)),
    ("DELETE", "/api/v1/batches/{job_id:str}"): ((STAFF, ADMIN), ("tasks",)),
    ("GET", "/api/v1/batches/{job_id:str}/results"): ((STAFF, ADMIN), ("tasks",)),
    ("GET", "/api/v1/documents"): ((STAFF, ADMIN), ("documents",)),
    ("POST", "/api/v1/documents"): ((STAFF, ADMIN), ("documents",)),
    ("GET", "/api/v1/documents/{doc_id:str}"): ((STAFF, ADMIN), ("documents",)),
    ("DELETE", "/api/v1/documents/{doc_id:str}"): ((STAFF, ADMIN), ("documents",)),
    ("GET", "/api/v1/documents/{doc_id:str}/text"): ((STAFF, ADMIN), ("documents",)),
    ("POST", "/v1/chat/completions"): ((STAFF, ADMIN), ("chat",)),
    ("POST", "/v1/embeddings"): ((STAFF, ADMIN), ("chat",)),
    ("GET", "/v1/models"): ((STAFF, ADMIN), ("chat",)),
    ("POST", "/ollama/api/chat"): ((STAFF, ADMIN), ("chat",)),
    ("POST", "/ollama/api/generate"): ((STAFF, ADMIN), ("chat",)),
    ("POST", "/ollama/api/show"): ((STAFF, ADMIN), ("chat",)),
    ("POST", "/ollama/api/embed"): ((STAFF, ADMIN), ("chat",)),
    ("GET", "/ollama/api/tags"): ((STAFF, ADMIN), ("chat",)),
    ("GET", "/ollama/api/version"): ((STAFF, ADMIN), ("chat",)),
    # Pages and partials: browser sessions only, never keys.
    ("GET", "/history"): ((STAFF, ADMIN), ()),
    ("GET", "/history/{entry_id:str}"): ((STAFF, ADMIN), ()),
    ("POST", "/history/{entry_id:str}/delete"): ((STAFF, ADMIN), ()),
    ("POST", "/history/{entry_id:str}/rerun"): ((STAFF, ADMIN), ()),
    ("GET", "/batches"): ((STAFF, ADMIN), ()),
    ("POST", "/batches"): ((STAFF, ADMIN), ()),
    ("GET", "/batches/rows"): ((STAFF, ADMIN), ()),
    ("GET", "/workspace"): ((STAFF, ADMIN), ()),
    ("POST", "/workspace/preview"): ((STAFF, ADMIN), ()),
    ("POST", "/workspace/run"): ((STAFF, ADMIN), ()),
    ("GET", "/audit"): ((AUDITOR,), ()),
    ("GET", "/audit/events/{seq:int}"): ((AUDITOR,), ()),
    ("POST", "/audit/verify"): ((AUDITOR,), ()),
    ("GET", "/admin"): ((ADMIN,), ()),
    ("GET", "/admin/models"): ((ADMIN,), ()),
    ("POST", "/admin/models/pulls"): ((ADMIN,), ()),
    ("GET", "/admin/models/pulls/{pull_id:str}"): ((ADMIN,), ()),
    ("GET", "/admin/policies"): ((ADMIN,), ()),
    ("POST", "/admin/policies/assign"): ((ADMIN,), ()),
    ("GET", "/admin/policies/{name:str}"): ((ADMIN,), ()),
    ("POST", "/admin/policies/{name:str}/activate"): ((ADMIN,), ()),
    ("POST", "/admin/policies/{name:str}/check"): ((ADMIN,), ()),
    ("GET", "/admin/policies/{name:str}/diff"): ((ADMIN,), ()),
    ("POST", "/admin/policies/{name:str}/rollback"): ((ADMIN,), ()),
    ("POST", "/admin/policies/{name:str}/test"): ((ADMIN,), ()),
    ("POST", "/admin/policies/{name:str}/versions"): ((ADMIN,), ()),
    ("GET", "/admin/users"): ((ADMIN,), ()),
    ("POST", "/admin/users/create"): ((ADMIN,), ()),
    ("POST", "/admin/users/keys"): ((ADMIN,), ()),
    ("POST", "/admin/users/keys/{key_id:str}/team"): ((ADMIN,), ()),
    ("POST", "/admin/users/keys/{key_id:str}/revoke"): ((ADMIN,), ()),
    ("POST", "/admin/users/{user_id:str}/revoke"): ((ADMIN,), ()),
    ("POST", "/admin/users/{user_id:str}/update"): ((ADMIN,), ()),
}
# Served by Litestar's own routers; each router is marked public as a whole.
FRAMEWORK_PREFIXES = ("/schema", "/static")

# Concrete requests for the templated paths; bodies that fail validation after the guard, so
# an allowed call proves the guard let it through without running a model.
PATH_VALUES = {
    "{name:str}": "nosuchthing",
    "{user_id:str}": "nobody",
    "{key_id:str}": "nokey",
    "{job_id:str}": "nojob",
    "{doc_id:str}": "nodoc",
    "{seq:int}": "999999",
    "{item_id:str}": "noitem",
    "{pull_id:str}": "nopull",
    "{entry_id:str}": "noentry",
    "{run_id:str}": "norun",
}


def concrete(path: str) -> str:
    """A request path for a route path: unknown ids, so allowed calls change nothing."""
    for template, value in PATH_VALUES.items():
        path = path.replace(template, value)
    assert "{" not in path, f"no test value for {path}"
    return path


def handlers(app: Litestar) -> list[tuple[str, str, HTTPRouteHandler]]:
    """(method, path, handler) for every HTTP handler of the app."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                found.append((method, route.path, handler))
    return found


def rule_of(handler: HTTPRouteHandler) -> Any:
    if handler.opt.get(PUBLIC_OPT) is True:
        return PUBLIC
    rule = handler.opt.get(ACCESS_OPT)
    if isinstance(rule, Access):
        roles = sorted(rule.roles)
        if rule.permission is not None:
            roles = [f"{role}+{rule.permission}" for role in roles]
        return (tuple(roles), tuple(sorted(rule.scopes)))
    return None


def unguarded(app: Litestar) -> list[tuple[str, str]]:
    """Routes without a rule, except the OPTIONS answers Litestar adds by itself."""
    return [
        (method, path)
        for method, path, handler in handlers(app)
        if rule_of(handler) is None
        and not (method == "OPTIONS" and handler.handler_name == "options_handler")
    ]


def test_every_route_declares_an_access_rule(appliance: RunningAppliance) -> None:
    app = appliance.server.app
    assert enforce_access in app.guards
    assert unguarded(app) == []
    # Litestar's automatic OPTIONS answers inherit their controller's rule or are refused.
    response = httpx.options(f"{appliance.url}/login", timeout=10)
    assert response.status_code == 403


def test_a_route_without_a_rule_is_found_and_refused() -> None:
    # Control for the test above: an unmarked handler is reported and the guard refuses it.
    @get("/forgotten", sync_to_thread=False)
    def forgotten() -> str:
        return "secret"

    app = Litestar(
        [forgotten],
        guards=[enforce_access],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=None,
    )
    assert unguarded(app) == [("GET", "/forgotten")]
    with TestClient(app) as client:
        assert client.get("/forgotten").status_code == 403


def _norm(rule: Any) -> Any:
    if rule == PUBLIC:
        return PUBLIC
    return (tuple(sorted(rule[0])), tuple(sorted(rule[1])))


def test_declared_rules_match_the_matrix(appliance: RunningAppliance) -> None:
    declared = {
        (method, path): rule_of(handler)
        for method, path, handler in handlers(appliance.server.app)
        if method not in ("OPTIONS", "HEAD") and not path.startswith(FRAMEWORK_PREFIXES)
    }
    missing = sorted(set(declared) - set(MATRIX))
    assert missing == [], f"routes not in the access matrix: {missing}"
    assert sorted(set(MATRIX) - set(declared)) == []
    for key, rule in MATRIX.items():
        assert declared[key] == _norm(rule), key
    for method, path, handler in handlers(appliance.server.app):
        if path.startswith(FRAMEWORK_PREFIXES) and method != "OPTIONS":
            assert rule_of(handler) == PUBLIC, (method, path)


def _call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PATCH", "PUT"):
        kwargs["json"] = {"unexpected": True}
    return client.request(method, concrete(path), **kwargs)


def _refused(response: httpx.Response) -> bool:
    # Each API family renders errors in its own format (OpenAI, Ollama, ours); the status is
    # what they share. Every call sends its CSRF token, so a 403 here is an access refusal.
    return response.status_code in (401, 403)


def test_role_and_scope_matrix_against_the_running_app(
    start_appliance: Callable[..., RunningAppliance],
    browser_for: Callable[..., Browser],
) -> None:
    app = start_appliance(wait_ready=False)
    principals: dict[str, tuple[httpx.Client, dict[str, str]]] = {}
    bare = httpx.Client(base_url=app.url, timeout=60)
    principals["anonymous"] = (bare, {})
    for role in ALL_ROLES:
        browser = browser_for(app, role)
        principals[role] = (browser.client, {"X-CSRF-Token": browser.csrf})
    reviewer = browser_for(app, STAFF, reviewer=True)
    principals[REVIEWER] = (reviewer.client, {"X-CSRF-Token": reviewer.csrf})
    for scope in SCOPES:
        principals[f"key:{scope}"] = (bare, {"Authorization": f"Bearer {new_key(app, [scope])}"})

    outcomes: dict[tuple[str, str, str], bool] = {}
    # Sign-out last: it ends the session the other calls use.
    ordered = sorted(MATRIX.items(), key=lambda item: item[0] == ("POST", "/logout"))
    for (method, path), rule in ordered:
        if rule == PUBLIC:
            continue
        roles, scopes = rule
        for name, (client, headers) in principals.items():
            if name == "anonymous":
                expected = False
            elif name.startswith("key:"):
                expected = name.removeprefix("key:") in scopes
            elif name == REVIEWER:
                expected = REVIEWER in roles or STAFF in roles
            else:
                expected = name in roles
            response = _call(client, method, path, headers)
            allowed = not _refused(response)
            outcomes[(method, path, name)] = allowed
            assert allowed == expected, (method, path, name, response.status_code, response.text)
    bare.close()
    # Every non-public route was tried by every principal.
    assert len(outcomes) == sum(1 for r in MATRIX.values() if r != PUBLIC) * len(principals)


@pytest.mark.parametrize("path", ["/healthz", "/login", "/static/app.css", "/schema/openapi.json"])
def test_public_routes_answer_without_credentials(appliance: RunningAppliance, path: str) -> None:
    response = httpx.get(f"{appliance.url}{path}", timeout=30)
    assert response.status_code == 200
