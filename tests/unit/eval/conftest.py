"""A migrated database of each kind, and more engines on it (as other replicas have)."""

from tests.unit.audit.conftest import engine  # noqa: F401  (fixture)
from tests.unit.db.conftest import other_engine  # noqa: F401  (fixture)
