"""Ansible callback for the converge test: how long each role (and each slow task) took.

Enabled by tests/test-deploy.sh only (ANSIBLE_CALLBACKS_ENABLED=step_times). At the end of the
playbook it writes JSON to the file named by STEP_TIMES_FILE: seconds per role (tasks outside a
role count under their play's name) in the order they first ran, and the slowest tasks.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: step_times
type: aggregate
short_description: seconds per role and the slowest tasks, as JSON
description: Writes the time spent in each role and the slowest tasks to $STEP_TIMES_FILE.
requirements:
  - enabled in configuration
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    """Times roles and tasks; a task's time runs until the next task (or the end) starts."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "step_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._play = ""
        self._current: tuple[str, str, float] | None = None
        self._roles: dict[str, float] = {}
        self._tasks: list[tuple[str, float]] = []

    def _close(self) -> None:
        if self._current is None:
            return
        step, task, started = self._current
        spent = time.monotonic() - started
        self._roles[step] = self._roles.get(step, 0.0) + spent
        self._tasks.append((f"{step}: {task}", spent))
        self._current = None

    def v2_playbook_on_play_start(self, play: Any) -> None:
        """Remember the play's name for tasks outside a role."""
        self._close()
        self._play = play.get_name().strip()

    def _start(self, task: Any) -> None:
        self._close()
        role = task._role.get_name() if task._role else f"play: {self._play}"
        self._current = (role, (task.name or task.action).strip(), time.monotonic())

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        """A task begins: the previous one ends."""
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        """A handler begins: the previous task ends."""
        self._start(task)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        """The playbook ends: write the times."""
        self._close()
        path = os.environ.get("STEP_TIMES_FILE")
        if not path:
            return
        slowest = sorted(self._tasks, key=lambda item: item[1], reverse=True)[:10]
        with open(path, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "roles": [[name, round(s, 1)] for name, s in self._roles.items()],
                    "slowest_tasks": [[name, round(s, 1)] for name, s in slowest],
                },
                out,
                indent=1,
            )
