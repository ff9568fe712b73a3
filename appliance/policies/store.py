"""Versioned policy storage in the database: immutable versions, activation, rollback, and the
resolution order API key → team → task → default.

The YAML files in `policies_dir` are imported at start-up: a file whose content is new becomes a
new version (author `file:<name>.yaml`), and is activated while the policy is still managed by
its file (its active version came from a file). Once an admin activates a version through the
console or CLI, later file changes are stored as versions but not activated over the admin's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from appliance.db import counters
from appliance.db.models import PolicyActivation, PolicyAssignment, PolicyVersion
from appliance.errors import InvalidInput, PolicyError, PolicyNotFound
from appliance.policies.loader import load_directory, parse_policy
from appliance.policies.schema import LoadedPolicy

AssignmentKind = Literal["key", "team", "task"]
FILE_AUTHOR = "file:"
MAX_MEMO = 10_000
"""Past this many remembered answers the memo starts again empty (bounded memory)."""
T = TypeVar("T")


@dataclass(frozen=True)
class VersionInfo:
    """A stored version as listings show it."""

    name: str
    number: int
    version: str
    author: str
    comment: str
    created_at: datetime
    active: bool


class PolicyStore:
    """Policies by name; the active version of each is what requests run under.

    What requests ask on every call (the active version of a policy, the policy a caller
    resolves to, the policies it may name) is remembered until the `policies` change counter
    moves (`appliance.db.counters`): any version, activation or assignment written anywhere,
    by this process, another replica or by hand, is seen by the next request.
    """

    def __init__(self, engine: Engine, *, default: str) -> None:
        self._engine = engine
        self.default_name = default
        self._parsed: dict[int, LoadedPolicy] = {}
        self._lock = threading.Lock()
        self._memo: counters.CounterMemo[tuple[Any, ...], Any] = counters.CounterMemo(
            engine, "policies", max_entries=MAX_MEMO
        )

    def _remembered(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """`compute()`, remembered while the counter stays put. The counter is read first, so
        an answer computed from rows older than the number it is filed under is never kept."""
        version = self._memo.version()
        known = self._memo.get(key, version=version)
        if known is not None:
            return known  # type: ignore[no-any-return]
        value = compute()
        self._memo.put(key, value, version=version)
        return value

    # -- loading -----------------------------------------------------------------------------
    def import_directory(self, directory: Path) -> list[str]:
        """Import the policy files (validated first: one bad file stops start-up)."""
        files = load_directory(directory)
        for name, loaded in files.items():
            path = Path(loaded.source)
            text = path.read_text(encoding="utf-8")
            stored = self._create(
                name,
                text,
                loaded,
                author=f"{FILE_AUTHOR}{path.name}",
                comment=f"imported from {path.name}",
            )
            with Session(self._engine) as session:
                active = self._active_row(session, name)
                activated_by = (
                    session.get(PolicyActivation, active[1]).activated_by  # type: ignore[union-attr]
                    if active
                    else ""
                )
            # Managed by its file while the latest activation came from a file import.
            file_managed = active is None or activated_by.startswith(FILE_AUTHOR)
            if file_managed and (active is None or active[0].id != stored.id):
                self._activate_row(stored, by=f"{FILE_AUTHOR}{path.name}")
        if self.default_name not in self.names():
            raise PolicyError(
                f"default policy '{self.default_name}' is not among the policies "
                f"({', '.join(self.names()) or 'none'})",
                field="default_policy",
            )
        return sorted(files)

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of all policies with an active version."""
        with Session(self._engine) as session:
            rows = session.exec(select(PolicyActivation.name).distinct())
            return sorted(set(rows))

    def _active_row(self, session: Session, name: str) -> tuple[PolicyVersion, int] | None:
        statement = (
            select(PolicyActivation)
            .where(PolicyActivation.name == name)
            .order_by(PolicyActivation.id.desc())  # type: ignore[union-attr]
            .limit(1)
        )
        activation = session.exec(statement).first()
        if activation is None:
            return None
        version = session.get(PolicyVersion, activation.version_id)
        assert version is not None and activation.id is not None
        return version, activation.id

    def _parse(self, row: PolicyVersion) -> LoadedPolicy:
        assert row.id is not None
        with self._lock:
            cached = self._parsed.get(row.id)
        if cached is None:
            cached = parse_policy(row.source, source=f"{row.name} version {row.number}")
            with self._lock:
                self._parsed[row.id] = cached
        return cached

    def get(self, name: str | None = None) -> LoadedPolicy:
        """The active version of `name` (the default policy when None)."""
        key = name or self.default_name
        return self._remembered(("get", key), lambda: self._active(key))

    def _active(self, key: str) -> LoadedPolicy:
        with Session(self._engine) as session:
            active = self._active_row(session, key)
            if active is None:
                raise PolicyNotFound(
                    f"policy '{key}' does not exist; available: {', '.join(self.names())}",
                    field="policy",
                )
            return self._parse(active[0])

    def get_version(self, name: str, version: str) -> LoadedPolicy:
        """A specific version, by content hash or by number."""
        return self._parse(self._version_row(name, version))

    def _version_row(self, name: str, version: str) -> PolicyVersion:
        with Session(self._engine) as session:
            statement = select(PolicyVersion).where(PolicyVersion.name == name)
            if version.isascii() and version.isdigit():
                # A number beyond any version (the column is 32-bit) matches nothing.
                number = int(version) if len(version) <= 9 else -1
                statement = statement.where(PolicyVersion.number == number)
            else:
                statement = statement.where(PolicyVersion.version == version)
            row = session.exec(statement.order_by(PolicyVersion.number.desc())).first()  # type: ignore[attr-defined]
        if row is None:
            raise PolicyNotFound(f"policy '{name}' has no version '{version}'", field="version")
        return row

    def source(self, name: str, version: str) -> str:
        """The YAML text of a version (for diffs and the editor)."""
        return self._version_row(name, version).source

    def history(self, name: str) -> list[VersionInfo]:
        """Every version of `name`, newest first, marking the active one."""
        with Session(self._engine) as session:
            active = self._active_row(session, name)
            rows = session.exec(
                select(PolicyVersion)
                .where(PolicyVersion.name == name)
                .order_by(PolicyVersion.number.desc())  # type: ignore[attr-defined]
            ).all()
        if not rows:
            raise PolicyNotFound(f"policy '{name}' does not exist", field="policy")
        active_id = active[0].id if active else None
        return [
            VersionInfo(
                r.name, r.number, r.version, r.author, r.comment, r.created_at, r.id == active_id
            )
            for r in rows
        ]

    # -- changing ----------------------------------------------------------------------------
    def _create(
        self, name: str, text: str, loaded: LoadedPolicy, *, author: str, comment: str
    ) -> PolicyVersion:
        with Session(self._engine, expire_on_commit=False) as session:
            existing = session.exec(
                select(PolicyVersion).where(
                    PolicyVersion.name == name, PolicyVersion.version == loaded.version
                )
            ).first()
            if existing is not None:
                return existing  # same content: not a change, no new version
            number = session.exec(
                select(func.coalesce(func.max(PolicyVersion.number), 0)).where(
                    PolicyVersion.name == name
                )
            ).one()
            row = PolicyVersion(
                name=name,
                number=int(number) + 1,
                version=loaded.version,
                source=text,
                author=author,
                comment=comment,
            )
            session.add(row)
            session.commit()
            return row

    def create_version(
        self, name: str, text: str, *, author: str, comment: str = ""
    ) -> VersionInfo:
        """Validate YAML `text` for policy `name` and store it as a new (inactive) version."""
        loaded = parse_policy(text, source=f"{name} (edit)")
        if loaded.policy.name != name:
            raise InvalidInput(
                f"the YAML names policy '{loaded.policy.name}', not '{name}'", field="name"
            )
        row = self._create(name, text, loaded, author=author, comment=comment)
        return next(v for v in self.history(name) if v.number == row.number)

    def _activate_row(self, row: PolicyVersion, *, by: str) -> None:
        assert row.id is not None
        with Session(self._engine) as session:
            session.add(PolicyActivation(name=row.name, version_id=row.id, activated_by=by))
            session.commit()

    def activate(self, name: str, version: str, *, by: str) -> LoadedPolicy:
        """Make `version` (hash or number) of `name` the one requests run under."""
        row = self._version_row(name, version)
        self._activate_row(row, by=by)
        return self._parse(row)

    def rollback(self, name: str, *, by: str) -> LoadedPolicy:
        """Re-activate the version that was active before the current one."""
        with Session(self._engine) as session:
            current = self._active_row(session, name)
            if current is None:
                raise PolicyNotFound(f"policy '{name}' does not exist", field="policy")
            version, activation_id = current
            previous = session.exec(
                select(PolicyActivation)
                .where(
                    PolicyActivation.name == name,
                    PolicyActivation.id < activation_id,  # type: ignore[operator]
                    PolicyActivation.version_id != version.id,
                )
                .order_by(PolicyActivation.id.desc())  # type: ignore[union-attr]
                .limit(1)
            ).first()
            if previous is None:
                raise InvalidInput(
                    f"policy '{name}' has no earlier version to roll back to", field="policy"
                )
            target = session.get(PolicyVersion, previous.version_id)
        assert target is not None
        self._activate_row(target, by=by)
        return self._parse(target)

    # -- assignment and resolution -------------------------------------------------------------
    def assign(
        self,
        kind: AssignmentKind,
        target: str,
        policy: str | None,
        *,
        allowed: list[str] | None = None,
    ) -> None:
        """Assign `policy` to a key, team or task (None removes the assignment).

        `allowed` names the other policies a request under this assignment may ask for (None
        keeps the current list); the assigned policy is a floor, anything else is refused."""
        if policy is not None:
            self.get(policy)  # must exist
        for name in allowed or []:
            self.get(name)
        listed = ",".join(sorted(set(allowed))) if allowed is not None else None
        with Session(self._engine) as session:
            row = session.exec(
                select(PolicyAssignment).where(
                    PolicyAssignment.kind == kind, PolicyAssignment.target == target
                )
            ).first()
            if policy is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(
                    PolicyAssignment(kind=kind, target=target, policy=policy, allowed=listed or "")
                )
            else:
                row.policy = policy
                if listed is not None:
                    row.allowed = listed
                session.add(row)
            session.commit()

    def choices(
        self,
        *,
        key: str | None = None,
        key_policy: str | None = None,
        team: str | None = None,
        task: str | None = None,
    ) -> tuple[bool, frozenset[str]]:
        """Whether an assignment decides the caller's policy (a key's own policy, or a key,
        team or task assignment, in the order `resolve` uses), and the policies the admin
        allowed a request under it to name besides the assigned one."""
        return self._remembered(
            ("choices", key, key_policy, team, task),
            lambda: self._choices(key=key, key_policy=key_policy, team=team, task=task),
        )

    def _choices(
        self,
        *,
        key: str | None,
        key_policy: str | None,
        team: str | None,
        task: str | None,
    ) -> tuple[bool, frozenset[str]]:
        candidates = [(k, t) for k, t in (("key", key), ("team", team), ("task", task)) if t]
        found: dict[tuple[str, str], PolicyAssignment] = {}
        if candidates:
            with Session(self._engine) as session:
                rows = session.exec(
                    select(PolicyAssignment).where(
                        PolicyAssignment.target.in_([t for _, t in candidates])  # type: ignore[attr-defined]
                    )
                ).all()
            found = {(r.kind, r.target): r for r in rows}
        if key_policy:
            row = found.get(("key", key)) if key else None
            return True, _names(row.allowed) if row is not None else frozenset()
        for kind, target in candidates:
            row = found.get((kind, target))
            if row is not None:
                return True, _names(row.allowed)
        return False, frozenset()

    def resolve(
        self,
        *,
        key: str | None = None,
        key_policy: str | None = None,
        team: str | None = None,
        task: str | None = None,
    ) -> LoadedPolicy:
        """The policy a request runs under: its API key's, its team's, its task's, or default."""
        return self._remembered(
            ("resolve", key, key_policy, team, task),
            lambda: self._resolve(key=key, key_policy=key_policy, team=team, task=task),
        )

    def _resolve(
        self,
        *,
        key: str | None,
        key_policy: str | None,
        team: str | None,
        task: str | None,
    ) -> LoadedPolicy:
        if key_policy:
            return self._active(key_policy)
        candidates = [("key", key), ("team", team), ("task", task)]
        wanted = [(k, t) for k, t in candidates if t]
        if wanted:
            with Session(self._engine) as session:
                rows = session.exec(
                    select(PolicyAssignment).where(
                        PolicyAssignment.target.in_([t for _, t in wanted])  # type: ignore[attr-defined]
                    )
                ).all()
            found = {(r.kind, r.target): r.policy for r in rows}
            for kind, target in wanted:
                if (kind, target) in found:
                    return self._active(found[(kind, target)])
        return self._active(self.default_name)


def _names(listed: str) -> frozenset[str]:
    return frozenset(name for name in listed.split(",") if name)
