"""Change counters: whether state a replica caches (verified API keys, resolved policies) has
changed since it was cached, anywhere. Triggers bump them (migration 0012), so every writer
counts, another replica and a hand-made change in the database included.

A cache reads its counter once per use and drops what it holds when the number moved. The
counter is read before the state it guards, so a change committed in between is seen by the
next read: a cache is never newer than the number it is filed under.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Column, Engine, MetaData, String, Table, bindparam, select
from sqlalchemy.types import BigInteger

Counter = Literal["auth", "policies"]

COUNTERS = Table(
    "change_counters",
    MetaData(),
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
_READ = select(COUNTERS.c.value).where(COUNTERS.c.name == bindparam("name"))


def read(engine: Engine, name: Counter) -> int:
    """The counter's value now (one primary-key read on a pooled connection)."""
    with engine.connect() as connection:
        return int(connection.execute(_READ, {"name": name}).scalar_one())
