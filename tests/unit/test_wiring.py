"""The composition root: handlers name only services it provides, and model pulls' events become
the same audit rows as before pulls reported through a protocol; a pull's guarded end commits
with its audit row or not at all (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import fields
from typing import Any, get_args, get_type_hints

from litestar import Controller
from litestar.di import Dependency
from litestar.handlers import BaseRouteHandler
from sqlalchemy import Engine

import appliance.api
import appliance.ui
from appliance.audit.store import AuditLog, AuditRecord
from appliance.auth.actor import Actor
from appliance.db.leases import LeaseTerms
from appliance.db.pulls import PullRows
from appliance.inference.pulls import PullEvent
from appliance.wiring import Appliance, audit_pulls
from tests.unit.audit.conftest import engine  # noqa: F401  (fixture)
from tests.unit.inference.test_model_pulls import new_job


def _named_dependencies(fn: Any) -> set[str]:
    hints = get_type_hints(fn, include_extras=True)
    return {
        name
        for name, hint in hints.items()
        if any(isinstance(a, Dependency) for a in get_args(hint)[1:])
    }


def _controllers() -> list[type[Controller]]:
    found: list[type[Controller]] = []
    for package in (appliance.api, appliance.ui):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, Controller) and value.__module__ == module.__name__:
                    found.append(value)
    return found


def test_every_handler_names_services_the_app_provides() -> None:
    provided = {f.name for f in fields(Appliance)}
    named: dict[str, set[str]] = {}
    for controller in _controllers():
        for name, member in vars(controller).items():
            if isinstance(member, BaseRouteHandler):
                named[f"{controller.__name__}.{name}"] = _named_dependencies(member.fn)
    assert named, "no handlers found"
    assert {"gateway", "policies", "audit"} <= set().union(*named.values())
    unknown = {h: sorted(d - provided) for h, d in named.items() if d - provided}
    assert unknown == {}
    # Nobody receives the whole container.
    assert not any("services" in d or "appliance" in d for d in named.values())


class Trail:
    """Collects what `AuditLog.append` would receive."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def append(self, record: AuditRecord, *, event_id: str | None = None) -> str:
        self.records.append(record)
        return "id"


async def test_pull_events_become_the_audit_rows_pulls_always_wrote() -> None:
    trail = Trail()
    record = audit_pulls(trail)  # type: ignore[arg-type]
    actor = Actor(id="user:admin", role="admin", source="127.0.0.1")
    await record(
        PullEvent(
            action="model.pulled",
            outcome="ok",
            requester=actor,
            model="qwen2.5:0.5b",
            target="ollama:qwen2.5:0.5b",
            details={"pull_id": "p1", "nodes": 2, "bytes": 300},
        )
    )
    assert trail.records == [
        AuditRecord(
            actor="user:admin",
            role="admin",
            source="127.0.0.1",
            action="model.pulled",
            outcome="ok",
            model="qwen2.5:0.5b",
            target="ollama:qwen2.5:0.5b",
            details={"pull_id": "p1", "nodes": 2, "bytes": 300},
        )
    ]


async def test_a_pulls_end_commits_with_its_audit_row_only_while_its_claim_holds_it(
    engine: Engine,  # noqa: F811  (the fixture)
) -> None:
    audit, pulls = AuditLog(engine), PullRows(engine, LeaseTerms(holder="replica", lease_s=30))
    record = audit_pulls(audit)
    requester = Actor(id="user:admin", role="admin", source="127.0.0.1")
    job = new_job(requester, node="ollama")
    token = pulls.add(job.row(), keep_finished=50)
    assert token is not None
    event = PullEvent(
        action="model.pulled",
        outcome="ok",
        requester=requester,
        model=job.model,
        target=f"ollama:{job.model}",
        details={"pull_id": job.id, "nodes": 1, "bytes": 3},
    )
    ended = {**job.row(), "status": "succeeded"}

    def finish(holder: str) -> Any:
        return lambda connection: pulls.finish(connection, ended, holder)

    assert not await record(event, only_if=finish(f"{token}-stale"))
    assert audit.recent() == [] and (pulls.get(job.id) or {})["status"] == "running"
    assert await record(event, only_if=finish(token))
    assert [e.action for e in audit.recent()] == ["model.pulled"]
    stored = pulls.get(job.id) or {}
    assert (stored["status"], stored["lease_holder"]) == ("succeeded", None)
