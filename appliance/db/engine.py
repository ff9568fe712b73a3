"""Engine creation and the migration gate.

SQLite runs in WAL mode with `synchronous=FULL`, so a committed audit row survives a power cut;
PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from appliance.errors import DatabaseNotMigrated

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create the engine for `url`, applying SQLite's durability pragmas on each connection."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            private_database_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def private_database_file(path: Path) -> None:
    """Create the SQLite file (and its directory) readable by the owner only, and tighten an
    existing one: it holds sealed content, the audit trail and key digests. SQLite gives the
    `-wal` and `-shm` files the database file's mode, so they follow."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def begin_write_locked(connection: Connection) -> None:
    """On SQLite, open `connection`'s transaction with the database's write lock taken up front
    (pysqlite would open a deferred one), so no other writer reads what this transaction reads
    before it writes. Elsewhere nothing: the transaction opens with the first statement."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at the packaged migrations, no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> str:
    """Migrate the database at `url` to the latest revision; returns that revision."""
    from alembic import command  # deferred: only migrations need Alembic

    config = alembic_config(url)
    command.upgrade(config, "head")
    head = ScriptDirectory.from_config(config).get_current_head()
    return head or ""


def ensure_migrated(engine: Engine) -> None:
    """Refuse to run on a database whose schema is not at the latest revision."""
    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    head = script.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"database is at revision {current or 'none'}, the code needs {head}: "
            "run `appliance db upgrade` (or `make run`, which does it)"
        )


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def secure_delete_on(session: Session) -> None:
    """On SQLite, have this session's deletes and overwrites zero the space they free."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA secure_delete = ON"))


def scrub(engine: Engine, table: str) -> None:
    """After content was deleted or overwritten in `table`: leave no readable copy in the
    database files (SQLite: truncate the write-ahead log; PostgreSQL: vacuum the table)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    elif engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'VACUUM "{table}"')


_held: dict[Path, tuple[int, int]] = {}
"""The SQLite databases this process serves: the descriptor holding each one's lock, and how
many holders in this process share it (`appliance serve`, then its app)."""


def hold_single_server(url: str) -> str | None:
    """Hold a lock beside a SQLite database for the rest of this process's life, so that a
    second server process on the same file refuses to start; the reason when another holds it.

    SQLite means one server process: each keeps its rate limits and throttles in its own memory.
    `appliance serve` takes it before it starts, and the app again at start-up, so a server
    started another way (`uvicorn --workers N`) is held to it too. A POSIX lock is the kernel's
    to release when the process ends, however it ends, and is not inherited by worker
    processes; in one process, holders share it and it goes with the last one's release. CLI
    commands take no lock: they work beside a server. Nothing to hold on PostgreSQL or an
    in-memory database.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = Path(str(parsed.database)).resolve()
    if database in _held:
        descriptor, holders = _held[database]
        _held[database] = (descriptor, holders + 1)
        return None
    lock = Path(f"{database}.lock")
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return (
            f"another `appliance serve` is already running on the SQLite database {database} "
            f"(it holds {lock}). SQLite means one server process: stop the other one, or run "
            "several app processes on PostgreSQL (APPLIANCE_DATABASE_URL="
            "postgresql+psycopg://...)."
        )
    _held[database] = (descriptor, 1)  # open, and the lock held, until released or the end
    return None


def release_single_server(url: str) -> None:
    """One holder of a SQLite database's lock is done (an app stopped); the last gives it up."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    database = Path(str(parsed.database)).resolve()
    if database not in _held:
        return
    descriptor, holders = _held.pop(database)
    if holders > 1:
        _held[database] = (descriptor, holders - 1)
    else:
        os.close(descriptor)
