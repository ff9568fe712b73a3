"""Change counters: whether state a replica caches (verified API keys, resolved policies, routing
overrides) has changed since it was cached, anywhere. Triggers bump them (migrations 0012 and
0015), so every writer
counts, another replica and a hand-made change in the database included.

A cache reads its counter once per use and drops what it holds when the number moved. The
counter is read before the state it guards, so a change committed in between is seen by the
next read: a cache is never newer than the number it is filed under.
"""

from __future__ import annotations

import threading
from typing import Generic, Literal, TypeVar

from sqlalchemy import Column, Engine, MetaData, String, Table, bindparam, select
from sqlalchemy.types import BigInteger

Counter = Literal["auth", "policies", "routing"]

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


K = TypeVar("K")
V = TypeVar("V")


class CounterMemo(Generic[K, V]):
    """Values filed under the counter's value when they were computed, bounded in number.

    `version()` reads the counter (and forgets everything if it moved); a value computed after
    that read is kept by `put(..., version=)` only if the counter still stands there, so a value
    derived from rows older than the number it is filed under is never kept.
    """

    def __init__(self, engine: Engine, name: Counter, *, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._name = name
        self._max_entries = max_entries
        self._values: dict[K, V] = {}
        self._version: int | None = None
        self._lock = threading.Lock()

    def version(self) -> int:
        """The counter now; what was kept under an older value is forgotten."""
        current = read(self._engine, self._name)
        with self._lock:
            if current != self._version:
                self._values.clear()
                self._version = current
        return current

    def get(self, key: K, *, version: int) -> V | None:
        """The value kept for `key` under `version`, if any."""
        with self._lock:
            return self._values.get(key) if version == self._version else None

    def put(self, key: K, value: V, *, version: int) -> None:
        """Keep `value`, computed after the counter was read as `version`."""
        with self._lock:
            if version != self._version:
                return  # the counter moved while the value was computed: do not keep it
            if len(self._values) >= self._max_entries:
                self._values.clear()
            self._values[key] = value
