"""Teams: a user or an API key may belong to one team, whose policy assignment its requests run
under (key > team > task > default, see `appliance.policies.resolve`).

A key's own team wins over its owner's. Single sign-on sets a user's team from an ID-token claim
(`oidc_team_claim`); admins set it in the console, the admin API or the CLI. Every change is
audited (`user.team_changed`, `apikey.team_changed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidInput

MAX_TEAM_LENGTH = 100


def check_team(team: str | None) -> str | None:
    """`team` stripped, None when empty; InvalidInput naming `team` when too long or when it
    holds control characters (it is shown in the console and written to the audit trail)."""
    if team is None:
        return None
    team = team.strip()
    if not team:
        return None
    if len(team) > MAX_TEAM_LENGTH or not team.isprintable():
        raise InvalidInput(
            f"team must have 1 to {MAX_TEAM_LENGTH} printable characters", field="team"
        )
    return team


@dataclass(frozen=True)
class ClaimedTeam:
    """What an ID token says about its user's team: `claimed` False when it says nothing."""

    claimed: bool
    team: str | None = None


def team_from_claims(claims: dict[str, Any], claim: str | None) -> ClaimedTeam:
    """The team an ID token puts its user in, read from the `claim` claim.

    A string is the team; a list gives its first element. A claim that is present but empty
    (`""`, `[]`, null) clears the team. When no claim is configured, or the token lacks it,
    nothing is claimed and the team an admin set stays (providers often leave a claim out of
    some flows). An unusable value (not a string, too long) raises InvalidInput.
    """
    if not claim or claim not in claims:
        return ClaimedTeam(claimed=False)
    value = claims[claim]
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and not isinstance(value, str):
        raise InvalidInput("the team claim is not a string", field="team")
    return ClaimedTeam(claimed=True, team=check_team(value))
