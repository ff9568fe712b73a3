"""The same policy change made through the REST API, the admin console's forms and the CLI is
recorded by the same typed event, with the same target, policy and details."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance.__main__ import build_parser
from appliance.audit.events import EVENTS
from appliance.config import PROJECT_ROOT
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser, browser_for  # noqa: F401  (a fixture)
from tests.integration.review.conftest import audit_rows

STRICT = (PROJECT_ROOT / "policies" / "strict.yaml").read_text()


def edit(score: str) -> str:
    assert "min_score: 0.6\n" in STRICT
    return STRICT.replace("min_score: 0.6\n", f"min_score: {score}\n")


def cli(app: RunningAppliance, *argv: str) -> None:
    """`appliance policy ...` as an operator runs it, on the app's own settings."""
    args = build_parser().parse_args(["policy", *argv, "--by", "ana"])
    assert args.func(app.services.settings, args) == 0


def active(app: RunningAppliance) -> str:
    return app.services.policies.get("strict").ref


def test_api_console_and_cli_record_a_change_alike(
    appliance: RunningAppliance,
    browser_for: Callable[..., Browser],  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    app = appliance
    admin = browser_for(app, "admin")
    csrf = {"X-CSRF-Token": admin.csrf}
    form = {**csrf, "HX-Request": "true"}
    first = active(app)

    def api(method: str, path: str, body: object = None) -> None:
        response = admin.client.request(method, path, json=body, headers=csrf)
        assert response.is_success, response.text

    def ui(path: str, data: dict[str, str] | None = None) -> None:
        response = admin.client.post(path, data=data or {}, headers=form)
        assert response.status_code == 200, response.text

    # Three new versions, one through each door.
    api("POST", "/api/v1/policies/strict/versions", {"source": edit("0.61"), "comment": "a"})
    ui("/admin/policies/strict/versions", {"source": edit("0.62"), "comment": "b"})
    imported = tmp_path / "strict.yaml"
    imported.write_text(edit("0.63"))
    cli(app, "import", str(imported), "--comment", "c")
    refs = {v.number: f"strict@{v.version}" for v in app.services.policies.history("strict")}
    assert refs[1] == first and len(refs) == 4

    # Activation, rollback and assignment, each once through every door.
    before: list[str] = []
    after: list[str] = []

    def track(change: Callable[[], None]) -> None:
        before.append(active(app))
        change()
        after.append(active(app))

    track(lambda: api("POST", "/api/v1/policies/strict/activate", {"version": "2"}))
    track(lambda: ui("/admin/policies/strict/activate", {"version": "3"}))
    track(lambda: cli(app, "activate", "strict", "4"))
    track(lambda: api("POST", "/api/v1/policies/strict/rollback"))
    track(lambda: ui("/admin/policies/strict/rollback"))
    track(lambda: cli(app, "rollback", "strict"))
    assign = "/api/v1/policies/assignments"
    api("PUT", assign, {"kind": "team", "target": "t-api", "policy": "strict"})
    ui("/admin/policies/assign", {"kind": "team", "target": "t-ui", "policy": "strict"})
    cli(app, "assign", "team", "t-cli", "strict")
    api("PUT", assign, {"kind": "team", "target": "t-api", "policy": None})
    ui("/admin/policies/assign", {"kind": "team", "target": "t-ui", "policy": ""})
    cli(app, "assign", "team", "t-cli", "--remove")

    rows = audit_rows(app, "policy.")
    assert all(row.action in EVENTS for row in rows)
    doors = [
        ("user:" + admin.user_id, "admin", "127.0.0.1"),
        ("user:" + admin.user_id, "admin", "127.0.0.1"),
        ("cli:ana", "admin", None),
    ]

    def by_door(action: str) -> list[AuditEvent]:
        found = [row for row in rows if row.action == action]
        assert [(r.actor, r.role, r.source) for r in found] == doors * (len(found) // 3)
        assert {r.outcome for r in found} == {"ok"}
        return found

    created = by_door("policy.created")
    assert [(r.target, r.policy, r.details) for r in created] == [
        (refs[n], refs[n], {"number": n}) for n in (2, 3, 4)
    ]
    number = {ref: n for n, ref in refs.items()}
    activations = by_door("policy.activated") + by_door("policy.rolled_back")
    changes = zip(before, after, strict=True)
    assert [(r.target, r.policy, r.details) for r in activations] == [
        (now, now, {"number": number[now], "previous": was}) for was, now in changes
    ]
    assert after[:3] == [refs[2], refs[3], refs[4]]

    assigned = by_door("policy.assigned")
    strict = f"strict@{app.services.policies.get('strict').version}"
    assert [(r.target, r.policy, r.details) for r in assigned] == [
        (f"team:{team}", strict, {"kind": "team", "assigned_to": team})
        for team in ("t-api", "t-ui", "t-cli")
    ]
    removed = by_door("policy.unassigned")
    assert [(r.target, r.policy, r.details) for r in removed] == [
        (f"team:{team}", None, {"kind": "team", "assigned_to": team})
        for team in ("t-api", "t-ui", "t-cli")
    ]
