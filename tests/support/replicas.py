"""Several `appliance serve` processes on one database: the scale-out layout on one machine.

Each replica has its own data directory (as each app host has its own disk) and shares only what
app hosts share in a deployment: the database and the key files in `<data_dir>/keys/` (the
deployment copies them to every app host; here every replica's `keys` is the first one's).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.process import appliance_cli, free_port, start_server


def replica_env(root: Path, models_dir: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment every replica shares: the database, the models, settings on top
    (`APPLIANCE_` + upper-cased name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATABASE_URL=database_url,
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_DATA_DIR=str(root / "replica-0"),
        APPLIANCE_MAX_TOKENS="16",
    )
    env.update({f"APPLIANCE_{name.upper()}": value for name, value in settings.items()})
    return env


class Replicas:
    """`count` servers on one database, each on its own loopback port and data directory.

    `setup()` migrates the database and creates the shared keys; `key(scopes)` makes an API key
    with the CLI; `kill(i)` is `kill -9`; `start(i)` starts a replica again.
    """

    def __init__(self, root: Path, env: dict[str, str], count: int) -> None:
        self.root = root
        self.env = env
        self.count = count
        self.ports = [free_port() for _ in range(count)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count

    @property
    def urls(self) -> list[str]:
        """Each replica's base address."""
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def env_of(self, i: int) -> dict[str, str]:
        """Replica `i`'s environment: the shared one with its own data directory."""
        return self.env | {"APPLIANCE_DATA_DIR": str(self.root / f"replica-{i}")}

    def setup(self) -> None:
        """Migrate the database and give every replica the first one's key files."""
        appliance_cli(self.env_of(0), "db", "upgrade", timeout=300)
        keys = self.root / "replica-0" / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        for i in range(1, self.count):
            data = self.root / f"replica-{i}"
            data.mkdir(parents=True, exist_ok=True)
            if not (data / "keys").exists():
                (data / "keys").symlink_to(keys, target_is_directory=True)

    def key(self, *scopes: str, name: str = "replicas") -> str:
        """A new API key with `scopes`, made by `appliance keys create`."""
        made = appliance_cli(
            self.env_of(0), "keys", "create", "--name", name, "--scopes", ",".join(scopes)
        )
        return made.stdout.strip().splitlines()[-1]

    def log(self, i: int) -> Path:
        """Replica `i`'s stderr (JSON log lines)."""
        return self.root / f"replica-{i}.log"

    def start(self, i: int, *, timeout: float = 180) -> None:
        """Start replica `i` and wait until it is ready."""
        self.processes[i] = start_server(
            self.env_of(i), self.ports[i], self.log(i), timeout=timeout
        )

    def start_all(self) -> None:
        """Start every replica, one after another (start-up is CPU-bound)."""
        for i in range(self.count):
            self.start(i)

    def kill(self, i: int) -> None:
        """`kill -9` replica `i`: no shutdown, no cleanup, as a crash or a power cut."""
        process = self.processes[i]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)  # its worker processes watch it and exit
            process.wait(timeout=30)
        self.processes[i] = None

    def stop(self, i: int) -> None:
        """Stop replica `i` gracefully."""
        process = self.processes[i]
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        self.processes[i] = None

    def alive(self) -> list[int]:
        """The replicas running now."""
        return [i for i, p in enumerate(self.processes) if p is not None and p.poll() is None]

    def round_robin(self, *, only: list[int] | None = None) -> Iterator[str]:
        """Base addresses in turn, forever (over `only` when given)."""
        return itertools.cycle([self.urls[i] for i in (only or range(self.count))])

    def clients(self, key: str, *, timeout: float = 120) -> list[httpx.Client]:
        """One client per replica, authenticated with `key`; the caller closes them."""
        headers = {"Authorization": f"Bearer {key}"}
        return [httpx.Client(base_url=url, headers=headers, timeout=timeout) for url in self.urls]

    def __enter__(self) -> Replicas:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for i in range(self.count):
            self.stop(i)
