"""A migrated database of each kind and an audit log, as the audit trail's unit tests use."""

from tests.unit.audit.conftest import engine, key, make_log  # noqa: F401  (fixtures)
