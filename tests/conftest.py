"""Fixtures: real SQLite and PostgreSQL, the real embedded models, the app on a loopback port.

Every test that takes `database_url` (directly or through `appliance`) runs twice: on SQLite and
on a throwaway PostgreSQL server. Without PostgreSQL binaries the second half is skipped with a
message saying how to enable it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.app import create_app
from appliance.auth import apikeys
from appliance.auth.roles import SCOPES
from appliance.config import PROJECT_ROOT, Settings
from appliance.db.engine import upgrade
from appliance.inference.bundled import install_bundled
from appliance.inference.embedded import embedded_backend
from appliance.wiring import Appliance
from tests.support.live import LiveServer
from tests.support.postgres import HOW_TO_ENABLE, PostgresServer, find_bin_dir
from tests.support.recording import RecordingBackend


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The bundled models, assembled and SHA-256-checked (reuses `make install`'s copy)."""
    path = Path(os.environ.get("APPLIANCE_TEST_MODELS_DIR", PROJECT_ROOT / "var" / "models"))
    install_bundled(path)
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(HOW_TO_ENABLE)
    server = PostgresServer.start(bin_dir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'appliance.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path) -> Callable[..., Settings]:
    """Settings for a test: its own data directory, the shared models, overrides on top."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "models_dir": models_dir,
            "max_tokens": 24,
            # The in-process detector, loaded once for the whole run; the pool of detector
            # processes (the production default) has its own tests (test_detector_pool.py).
            "detector_processes": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@dataclass
class RunningAppliance:
    """The app under test: its address, services, and the recording seam before the engine."""

    url: str
    services: Appliance
    backend: RecordingBackend
    server: LiveServer
    client: httpx.Client
    """An HTTP client for the app: base URL set, an API key with every scope attached."""


@pytest.fixture
def start_appliance(
    make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Callable[..., RunningAppliance]]:
    """Start the real app (migrated database, real detector, real models) with settings."""
    servers: list[LiveServer] = []
    clients: list[httpx.Client] = []

    def start(*, wait_ready: bool = True, **overrides: Any) -> RunningAppliance:
        settings = make_settings(database_url=database_url, **overrides)
        upgrade(settings.resolved_database_url)
        backend = RecordingBackend(embedded_backend(settings))
        app = create_app(settings, backends=[backend])
        server = LiveServer(app).__enter__()
        servers.append(server)
        if wait_ready:
            server.wait_ready()
        # Every scope, so tests written before sign-in keep talking to the app unchanged. Made
        # below the audited path, so the trail holds only what the test itself caused.
        _, key = apikeys.create(
            app.state.appliance.engine,
            app.state.identity.pepper,
            name="test-suite",
            scopes=list(SCOPES),
        )
        client = httpx.Client(
            base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {key}"}
        )
        clients.append(client)
        return RunningAppliance(server.url, app.state.appliance, backend, server, client)

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def appliance(start_appliance: Callable[..., RunningAppliance]) -> RunningAppliance:
    """The app with default settings, ready."""
    return start_appliance()
