"""Team names, the ID-token team claim, and the `Actor` fields derived from them."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from appliance.auth.actor import Actor, Purpose
from appliance.auth.oidc import OidcClient
from appliance.auth.teams import ClaimedTeam, check_team, team_from_claims
from appliance.config import Settings
from appliance.errors import InvalidInput, LoginFailed


@pytest.mark.parametrize(
    ("given", "team"),
    [(None, None), ("", None), ("   ", None), (" legal ", "legal"), ("a" * 100, "a" * 100)],
)
def test_team_names_are_stripped_and_empty_means_none(given: str | None, team: str | None) -> None:
    assert check_team(given) == team


@pytest.mark.parametrize("given", ["a" * 101, "legal\nhr", "le\x00gal"])
def test_team_names_refuse_overlong_and_control_characters(given: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_team(given)
    assert refused.value.field == "team"


@pytest.mark.parametrize(
    ("claims", "claim", "expected"),
    [
        ({"department": "legal"}, "department", ClaimedTeam(True, "legal")),
        ({"department": ["legal", "hr"]}, "department", ClaimedTeam(True, "legal")),
        ({"department": []}, "department", ClaimedTeam(True, None)),
        ({"department": ""}, "department", ClaimedTeam(True, None)),
        ({"department": None}, "department", ClaimedTeam(True, None)),
        ({"groups": ["legal"]}, "department", ClaimedTeam(False)),
        ({"department": "legal"}, None, ClaimedTeam(False)),
    ],
)
def test_team_claim_mapping(claims: dict[str, Any], claim: str | None, expected: Any) -> None:
    assert team_from_claims(claims, claim) == expected


def test_sso_identity_carries_the_claimed_team_and_refuses_a_bad_one(
    tmp_path: Path, engine: Engine
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        oidc_issuer="https://idp.example",
        oidc_client_id="appliance",
        oidc_default_role="staff",
        oidc_team_claim="department",
    )
    client = OidcClient(settings, engine)
    sso = client.identity_from({"sub": "1", "email": "a@example.org", "department": ["legal"]})
    assert sso.team == ClaimedTeam(True, "legal")
    assert client.identity_from({"sub": "1"}).team == ClaimedTeam(False)
    with pytest.raises(LoginFailed) as refused:
        client.identity_from({"sub": "1", "department": {"name": "legal"}})
    assert refused.value.reason == "bad_team"


def test_actor_round_trips_through_json_with_a_typed_purpose() -> None:
    actor = Actor(id="apikey:k1", role="service", team="legal", purpose=Purpose.BATCH)
    stored = json.loads(json.dumps(asdict(actor)))
    back = Actor(**stored)
    assert back == actor and back.purpose is Purpose.BATCH
    # Rows stored before the purpose existed rebuild as interactive, and a runner sets its own.
    old = {k: v for k, v in stored.items() if k != "purpose"}
    assert Actor(**old).purpose is Purpose.INTERACTIVE
    assert replace(Actor(**old), purpose=Purpose.EVALUATION).purpose is Purpose.EVALUATION
    with pytest.raises(ValueError):
        Actor(id="user:u1", role="staff", purpose="someday")  # type: ignore[arg-type]


def test_key_id_is_read_from_key_actors_only() -> None:
    assert Actor(id="apikey:k1", role="service").key_id == "k1"
    assert Actor(id="user:apikey:k1", role="staff").key_id is None
    assert Actor(id="cli:root", role="admin").key_id is None
