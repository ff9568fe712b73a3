"""The admin policy console: list, view, edit YAML with inline errors, test, diff, activate.

Storage and validation are `PolicyStore`'s; the test pane runs the gateway's own detector under
the draft. Every change goes through `PolicyService`, which audits it exactly as for the policy
API and CLI (`policy.created`, `policy.activated`, `policy.rolled_back`, `policy.assigned`,
`policy.unassigned`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Template
from sqlalchemy import Engine
from sqlmodel import Session, select

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.db.models import PolicyAssignment
from appliance.errors import InvalidInput, PolicyError
from appliance.gateway import Gateway
from appliance.policies.loader import parse_policy
from appliance.policies.service import ChangedBy, PolicyService
from appliance.policies.store import PolicyStore
from appliance.ui.common import fragment, render
from appliance.ui.highlight import ACTION_HELP, ACTIONS, preview

_LINE = re.compile(r":(\d+): ")


@dataclass(frozen=True)
class YamlProblem:
    """A validation error as the editor shows it: line, field and message."""

    line: int | None
    field: str | None
    message: str


def problem_of(exc: PolicyError | InvalidInput) -> YamlProblem:
    """Line and field out of the loader's `file:line: field 'x': message` error."""
    match = _LINE.search(exc.message)
    return YamlProblem(
        line=int(match.group(1)) if match else None,
        field=exc.field,
        message=exc.message[match.end() :] if match else exc.message,
    )


def _assignments(engine: Engine) -> list[PolicyAssignment]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(PolicyAssignment).order_by(PolicyAssignment.kind, PolicyAssignment.target)
            )
        )


class PolicyPagesController(Controller):
    """`/admin/policies`: the policy console for admins."""

    include_in_schema = False
    path = "/admin/policies"
    opt = access(roles=("admin",))

    def _versions(self, policies: PolicyStore, name: str, *, note: str | None = None) -> Template:
        store = policies
        return fragment("_policy_versions.html", name=name, versions=store.history(name), note=note)

    @get("/", sync_to_thread=True)
    def index(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyStore],
        engine: NamedDependency[Engine],
    ) -> Template:
        """Every policy, its active version and where it is assigned."""
        store = policies
        items = []
        for name in store.names():
            history = store.history(name)
            active = next(v for v in history if v.active)
            loaded = store.get(name)
            items.append(
                {
                    "name": name,
                    "active": active,
                    "versions": len(history),
                    "default": name == store.default_name,
                    "description": loaded.policy.description,
                }
            )
        return render(
            request,
            "policies.html",
            policies=items,
            assignments=_assignments(engine),
            names=store.names(),
            note=None,
        )

    @get("/{name:str}", sync_to_thread=True)
    def view(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        policies: NamedDependency[PolicyStore],
    ) -> Template:
        """One policy: YAML editor (active version, or `?version=`), test pane, versions, diff."""
        store = policies
        loaded = store.get(name)
        version = request.query_params.get("version") or loaded.version
        history = store.history(name)
        return render(
            request,
            "policy.html",
            name=name,
            loaded=loaded,
            version=version,
            source=store.source(name, version),
            versions=history,
            note=None,
        )

    @post("/{name:str}/check", status_code=200, sync_to_thread=True)
    def check(self, name: FromPath[str], data: URLEncodedBody[dict[str, str]]) -> Template:
        """Validate the draft YAML as the store would; the error names line and field."""
        problem = None
        try:
            loaded = parse_policy(data.get("source", ""), source=f"{name} (draft)")
            if loaded.policy.name != name:
                raise InvalidInput(
                    f"the YAML names policy '{loaded.policy.name}', not '{name}'", field="name"
                )
        except (PolicyError, InvalidInput) as exc:
            problem = problem_of(exc)
        return fragment("_yaml_check.html", problem=problem)

    @post("/{name:str}/test", status_code=200)
    async def test(
        self,
        name: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
        gateway: NamedDependency[Gateway],
    ) -> Template:
        """Findings in the sample text under the draft YAML (nothing is stored)."""
        text = data.get("sample", "")
        try:
            loaded = parse_policy(data.get("source", ""), source=f"{name} (draft)")
        except PolicyError as exc:
            return fragment("_yaml_check.html", problem=problem_of(exc))
        findings = await gateway.detect(text, gateway.spec(loaded, "input")) if text.strip() else []
        items = [
            (f, rule.action)
            for f in findings
            if (rule := loaded.policy.rule_for(f.entity, "input")) is not None
        ]
        return fragment(
            "_preview.html",
            empty=not text.strip(),
            policy=loaded,
            draft=True,
            view=preview(text, items),
            actions=ACTIONS,
            action_help=ACTION_HELP,
        )

    @post("/{name:str}/versions", status_code=200)
    async def save(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
        policies: NamedDependency[PolicyStore],
        policy_changes: NamedDependency[PolicyService],
    ) -> Template:
        """Store the draft as a new (inactive) version; a bad draft shows its error inline."""
        source = data.get("source", "")
        comment = data.get("comment", "")[:1000]
        try:
            version = await policy_changes.create_version(
                name, source, by=ChangedBy.of(actor_for(request)), comment=comment
            )
        except (PolicyError, InvalidInput) as exc:
            return fragment(
                "_yaml_check.html",
                problem=problem_of(exc),
                status=422,
                headers={"HX-Retarget": "#yaml-check", "HX-Reswap": "innerHTML"},
            )
        return self._versions(policies, name, note=f"Saved as version {version.number}.")

    @post("/{name:str}/activate", status_code=200)
    async def activate(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
        policies: NamedDependency[PolicyStore],
        policy_changes: NamedDependency[PolicyService],
    ) -> Template:
        """Requests run under this version from now on."""
        by = ChangedBy.of(actor_for(request))
        loaded = await policy_changes.activate(name, data.get("version", ""), by=by)
        return self._versions(policies, name, note=f"{loaded.ref} is active.")

    @post("/{name:str}/rollback", status_code=200)
    async def rollback(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        policies: NamedDependency[PolicyStore],
        policy_changes: NamedDependency[PolicyService],
    ) -> Template:
        """Back to the version that was active before."""
        by = ChangedBy.of(actor_for(request))
        loaded = await policy_changes.rollback(name, by=by)
        return self._versions(policies, name, note=f"Rolled back: {loaded.ref} is active.")

    @get("/{name:str}/diff", sync_to_thread=True)
    def diff(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        policies: NamedDependency[PolicyStore],
    ) -> Template:
        """Unified diff between versions `a` and `b` (default: the active version)."""
        store = policies
        active = store.get(name).version
        a = request.query_params.get("a") or active
        b = request.query_params.get("b") or active
        lines = list(
            difflib.unified_diff(
                store.source(name, a).splitlines(),
                store.source(name, b).splitlines(),
                fromfile=f"{name}@{a}",
                tofile=f"{name}@{b}",
                lineterm="",
            )
        )
        return render(request, "policy_diff.html", "_diff.html", name=name, a=a, b=b, lines=lines)

    @post("/assign", status_code=200)
    async def assign(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[dict[str, str]],
        policies: NamedDependency[PolicyStore],
        policy_changes: NamedDependency[PolicyService],
        engine: NamedDependency[Engine],
    ) -> Template:
        """Assign a policy to an API key, a team or a task; an empty policy removes it."""
        kind = data.get("kind", "")
        if kind not in ("key", "team", "task"):
            raise InvalidInput("kind must be key, team or task", field="kind")
        target = data.get("target", "").strip()
        if not target or len(target) > 200:
            raise InvalidInput("give the key id, team or task to assign to", field="target")
        policy = data.get("policy") or None
        await policy_changes.assign(
            cast(Literal["key", "team", "task"], kind),
            target,
            policy,
            by=ChangedBy.of(actor_for(request)),
        )
        return fragment(
            "_assignments.html",
            assignments=_assignments(engine),
            names=policies.names(),
            note=f"{kind} {target}: {policy or 'assignment removed'}.",
        )
