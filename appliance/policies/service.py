"""Every change to the policies, each with its typed audit event, in one place.

The REST API, the admin console and the `appliance policy` CLI all change policies through
`PolicyService`, so a change reads the same in the audit trail whichever way it was made:

- `policy.created`, `policy.activated`, `policy.rolled_back`: `target` and `policy` are the
  version's `name@version`; `details` its `number` (and, for the last two, the `previous`
  active `name@version`).
- `policy.assigned`, `policy.unassigned`: `target` is `apikey:<id>`, `team:<name>` or
  `task:<name>`; `policy` the assigned `name@version`; `details` the `kind`, the assignee
  (`assigned_to`) and, when given, the `allowed` list.

The change is stored first and its event appended right after, in the same call; a change that
fails (bad YAML, unknown version) writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import anyio

from appliance.audit.events import (
    PolicyActivated,
    PolicyAssigned,
    PolicyCreated,
    PolicyEvent,
    PolicyRolledBack,
    PolicyUnassigned,
)
from appliance.audit.store import AuditLog
from appliance.policies.schema import LoadedPolicy
from appliance.policies.store import AssignmentKind, PolicyStore, VersionInfo

ASSIGNEE_PREFIX: dict[str, str] = {"key": "apikey", "team": "team", "task": "task"}
"""How an assignment's target is named in the trail (`apikey:` as for the key's own events)."""


class _Who(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def source(self) -> str | None: ...


@dataclass(frozen=True)
class ChangedBy:
    """Who makes a change, as the trail records it: actor id (`user:<id>`, `apikey:<id>`,
    `cli:<os user>`), role, and where the change came from (address, or None for the CLI)."""

    actor: str
    role: str | None = None
    source: str | None = None

    @classmethod
    def of(cls, actor: _Who) -> ChangedBy:
        """From the request path's `Actor` (or anything with its `id`, `role`, `source`)."""
        return cls(actor.id, actor.role, actor.source)


class PolicyService:
    """Creates, activates, rolls back and assigns policies, and audits each change."""

    def __init__(self, store: PolicyStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    # -- the changes (blocking: call from a worker thread, or the async twins below) ---------
    def create_version_sync(
        self, name: str, source: str, *, by: ChangedBy, comment: str = ""
    ) -> VersionInfo:
        """Validate `source` and store it as a new, inactive version of `name` (the same
        content again is no new version, but is still recorded as the save it was)."""
        version = self.store.create_version(name, source, author=by.actor, comment=comment)
        ref = f"{name}@{version.version}"
        self._record(PolicyCreated, by, target=ref, policy=ref, number=version.number)
        return version

    def activate_sync(self, name: str, version: str, *, by: ChangedBy) -> LoadedPolicy:
        """Make `version` (number or hash) of `name` the one requests run under."""
        previous = self._active_ref(name)
        loaded = self.store.activate(name, version, by=by.actor)
        self._record_activation(PolicyActivated, by, name, loaded, previous)
        return loaded

    def rollback_sync(self, name: str, *, by: ChangedBy) -> LoadedPolicy:
        """Re-activate the version that was active before the current one."""
        previous = self._active_ref(name)
        loaded = self.store.rollback(name, by=by.actor)
        self._record_activation(PolicyRolledBack, by, name, loaded, previous)
        return loaded

    def assign_sync(
        self,
        kind: AssignmentKind,
        target: str,
        policy: str | None,
        *,
        by: ChangedBy,
        allowed: list[str] | None = None,
    ) -> LoadedPolicy | None:
        """Assign `policy` to an API key, a team or a task, or remove the assignment (None).

        `allowed` lists the other policies a request under the assignment may name (None
        keeps the current list). Returns the assigned policy's active version."""
        self.store.assign(kind, target, policy, allowed=allowed)
        assignee = f"{ASSIGNEE_PREFIX[kind]}:{target}"
        details: dict[str, str] = {"kind": kind, "assigned_to": target}
        if policy is None:
            self._record(PolicyUnassigned, by, target=assignee, **details)
            return None
        loaded = self.store.get(policy)
        if allowed is not None:
            details["allowed"] = ",".join(sorted(set(allowed)))[:200]
        self._record(PolicyAssigned, by, target=assignee, policy=loaded.ref, **details)
        return loaded

    # -- the same off the event loop -----------------------------------------------------------
    async def create_version(
        self, name: str, source: str, *, by: ChangedBy, comment: str = ""
    ) -> VersionInfo:
        """`create_version_sync` in a worker thread."""
        return await anyio.to_thread.run_sync(
            lambda: self.create_version_sync(name, source, by=by, comment=comment)
        )

    async def activate(self, name: str, version: str, *, by: ChangedBy) -> LoadedPolicy:
        """`activate_sync` in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: self.activate_sync(name, version, by=by))

    async def rollback(self, name: str, *, by: ChangedBy) -> LoadedPolicy:
        """`rollback_sync` in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: self.rollback_sync(name, by=by))

    async def assign(
        self,
        kind: AssignmentKind,
        target: str,
        policy: str | None,
        *,
        by: ChangedBy,
        allowed: list[str] | None = None,
    ) -> LoadedPolicy | None:
        """`assign_sync` in a worker thread."""
        return await anyio.to_thread.run_sync(
            lambda: self.assign_sync(kind, target, policy, by=by, allowed=allowed)
        )

    # -- the trail -----------------------------------------------------------------------------
    def _active_ref(self, name: str) -> str | None:
        return next((f"{name}@{v.version}" for v in self.store.history(name) if v.active), None)

    def _record_activation(
        self,
        event: type[PolicyEvent],
        by: ChangedBy,
        name: str,
        loaded: LoadedPolicy,
        previous: str | None,
    ) -> None:
        number = next(v.number for v in self.store.history(name) if v.version == loaded.version)
        self._record(
            event, by, target=loaded.ref, policy=loaded.ref, number=number, previous=previous
        )

    def _record(
        self,
        event: type[PolicyEvent],
        by: ChangedBy,
        *,
        target: str,
        policy: str | None = None,
        **details: str | int | None,
    ) -> None:
        self.audit.append_sync(
            event(
                actor=by.actor,
                role=by.role,
                source=by.source,
                target=target,
                policy=policy,
                details=details,
            ).record()
        )
