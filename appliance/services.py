"""Audited admin changes the API and the pages share: the escalation budget's cap, and
policy changes (`policy.created`, `.activated`, `.rolled_back`)."""

from __future__ import annotations

from typing import Any

import anyio

from appliance.audit.store import AuditLog, AuditRecord
from appliance.auth.actor import Actor
from appliance.errors import NotFound
from appliance.gateway import Gateway


async def change_escalation_budget(
    gateway: Gateway, audit: AuditLog, actor: Actor, cap_usd: float | None
) -> dict[str, Any]:
    """Set the monthly escalation budget (None: no cap) and audit `budget.changed` with the
    old and new cap in cents; returns the budget's status."""
    budget = gateway.routing.budget
    if budget is None:  # pragma: no cover - every app built by create_app has one
        raise NotFound("no escalation budget is configured")
    previous = await anyio.to_thread.run_sync(lambda: budget.set_cap(cap_usd, actor=actor.id))

    def cents(value: float | None) -> int | None:
        return None if value is None else round(value * 100)

    await audit.append(
        AuditRecord(
            actor=actor.id,
            role=actor.role,
            source=actor.source,
            action="budget.changed",
            outcome="ok",
            target="escalation_budget",
            details={"old_cap_cents": cents(previous), "new_cap_cents": cents(cap_usd)},
        )
    )
    return (await anyio.to_thread.run_sync(budget.status)).to_dict()


async def audit_policy_change(
    audit: AuditLog, actor: Actor, action: str, ref: str, **details: str | int
) -> None:
    """Record a policy change (`policy.created`, `.activated`, `.rolled_back`) by `actor`."""
    await audit.append(
        AuditRecord(
            actor=actor.id,
            role=actor.role,
            source=actor.source,
            action=action,
            outcome="ok",
            policy=ref,
            target=ref.split("@")[0],
            details=details,
        )
    )
