"""Fixtures for the scale-out tests: replicas of `appliance serve` on one throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer
from tests.support.replicas import Replicas, replica_env


@pytest.fixture
def start_replicas(
    pg_server: PostgresServer, tmp_path: Path, models_dir: Path
) -> Iterator[Callable[..., Replicas]]:
    """`start_replicas(count, **settings)`: a new database, migrated, and `count` replicas
    serving on it (settings as strings, by their names in appliance/config.py)."""
    made: list[Replicas] = []

    def start(count: int, *, started: bool = True, **settings: str) -> Replicas:
        root = tmp_path / f"replicas-{len(made)}"
        root.mkdir()
        replicas = Replicas(
            root, replica_env(root, models_dir, pg_server.create_database(), **settings), count
        )
        made.append(replicas)
        replicas.setup()
        if started:
            replicas.start_all()
        return replicas

    yield start
    for replicas in made:
        replicas.__exit__(None, None, None)
