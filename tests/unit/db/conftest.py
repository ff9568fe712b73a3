"""A migrated database of each kind, and more engines on it (as other replicas have)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from appliance.db.engine import make_engine
from tests.unit.audit.conftest import engine  # noqa: F401  (fixture)


@pytest.fixture
def other_engine(database_url: str) -> Iterator[Callable[[], Engine]]:
    """`other_engine()`: a new engine (its own connection pool) on the same database (which
    the test migrates through `engine`)."""
    made: list[Engine] = []

    def build() -> Engine:
        made.append(make_engine(database_url))
        return made[-1]

    yield build
    for each in made:
        each.dispose()
