"""Row leases slowed at will, as by a database outage: real `RowLeases` whose claim and release
wait in their thread until the test lets them go."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, Table

from appliance.db.leases import LeaseTerms, RowLeases


class GatedLeases(RowLeases):
    """Real row leases on `table` whose claim and release (each in its thread) wait for `go`
    first (`entered` is set once one waits) and note the thread they ran on in `threads`."""

    def __init__(self, engine: Engine, table: Table, terms: LeaseTerms) -> None:
        super().__init__(engine, table, terms)
        self.go = threading.Event()
        self.entered = threading.Event()
        self.threads: list[int] = []

    def _gate(self) -> None:
        self.threads.append(threading.get_ident())
        self.entered.set()
        assert self.go.wait(timeout=10), "the test never let it go"  # a hang guard

    def claim(self, *where: Any, **options: Any) -> list[Any]:
        self._gate()
        return super().claim(*where, **options)

    def release(self, leases: Any, *, values: Any = None) -> None:
        self._gate()
        super().release(leases, values=values)
