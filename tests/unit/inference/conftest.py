"""A migrated database of each kind, and more engines on it (as other replicas have)."""

from tests.unit.db.conftest import engine, other_engine  # noqa: F401  (fixtures)
