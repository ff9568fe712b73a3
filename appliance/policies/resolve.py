"""The one place that decides which policy a request runs under.

Order: the API key's bound policy, else the key's, the team's or the task's assignment, else the
default policy. That resolved policy is a floor set by an admin: a request may name it, or one
the admin allowed with the assignment, and nothing else (`PolicyNotAllowed`, 403). A caller with
no assignment may name the policies listed in the `requestable_policies` setting (`*`: any).

The gateway, documents, batches and evaluation runs all call `resolve_policy`; callers pass the
actor's fields (this package does not know `Actor`: see the package map).
"""

from __future__ import annotations

from collections.abc import Collection

from appliance.errors import PolicyNotAllowed
from appliance.policies.schema import LoadedPolicy
from appliance.policies.store import PolicyStore


def resolve_policy(
    store: PolicyStore,
    *,
    key_id: str | None,
    key_policy: str | None,
    team: str | None,
    task: str | None = None,
    requested: str | None = None,
    requestable: Collection[str] = (),
) -> LoadedPolicy:
    """The policy a request by this caller for `task` runs under, naming `requested` (or none).

    `key_id` is the API key's id (None for a user), `key_policy` the policy bound to the key,
    `team` the caller's team. `requestable` lists what a caller without an assignment may name.
    An unknown requested name is `PolicyNotFound` (404); one outside the floor is
    `PolicyNotAllowed` (403)."""
    floor = store.resolve(key=key_id, key_policy=key_policy, team=team, task=task)
    if requested is None or requested == floor.policy.name:
        return floor
    named = store.get(requested)
    assigned, allowed = store.choices(key=key_id, key_policy=key_policy, team=team, task=task)
    if not assigned:
        allowed = frozenset(requestable)
    if requested in allowed or (not assigned and "*" in allowed):
        return named
    raise PolicyNotAllowed(
        f"this caller's requests run under policy '{floor.policy.name}'; naming '{requested}' is "
        "not allowed (an admin can allow it with the assignment)",
        field="policy",
    )
