"""Alembic environment: runs migrations against the URL set by `appliance.db.engine`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from appliance.db import models  # noqa: F401  (registers the tables on the metadata)
from appliance.db.engine import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on a live connection."""
    url = config.get_main_option("sqlalchemy.url") or ""
    # The engine's own pool: swapping in a NullPool skipped the dialect's first-connect set-up,
    # which left SQLite's server version unknown and broke reflection (batch migrations).
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
