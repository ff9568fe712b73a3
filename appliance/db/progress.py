"""Counts of background work by status: the parents (batch jobs, evaluation runs) and the
children (items, results) of the parents still open, each in one grouped count on indexed
columns. Finished parents' children are left out: they only grow, and nothing waits on them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Table, func, select


@dataclass(frozen=True)
class StatusCounts:
    """Parents by status, and the children of open parents by status."""

    parents: dict[str, int]
    children: dict[str, int]


def status_counts(
    engine: Engine, parents: Table, children: Column[str], *, open_statuses: Collection[str]
) -> StatusCounts:
    """Count `parents` by status, and the rows of `children` (the foreign key column to
    `parents.id`) whose parent's status is one of `open_statuses`."""
    child_table = children.table
    by_parent = select(parents.c.status, func.count()).group_by(parents.c.status)
    by_child = (
        select(child_table.c.status, func.count())
        .join(parents, parents.c.id == children)
        .where(parents.c.status.in_(open_statuses))
        .group_by(child_table.c.status)
    )
    with engine.connect() as connection:
        counted = [
            {str(status): int(count) for status, count in connection.execute(statement)}
            for statement in (by_parent, by_child)
        ]
    return StatusCounts(parents=counted[0], children=counted[1])
