"""What the benchmark reports share: percentiles, and the versions of what was measured.

Kept free of the appliance's own imports: the benchmarks' small backends import their modules.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def appliance_commit() -> str:
    """The checkout's short commit, marked when appliance/ has uncommitted changes."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=CHECKOUT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "appliance"],
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
    ).stdout.strip()
    return commit + (" (appliance/ modified)" if dirty else "")


def versions(
    *,
    programs: Mapping[str, Sequence[str]] | None = None,
    packages: Mapping[str, str] | None = None,
    other_python: tuple[Path, Sequence[str]] | None = None,
) -> str:
    """`name version, ...` of what a run measured, the appliance's commit first.

    `programs`: name -> the command that prints the program's version (the first dotted number
    of its first line is kept, or the whole line). `packages`: name -> distribution installed
    alongside the appliance. `other_python`: an interpreter (a venv kept apart from the
    appliance's, say) and distributions installed there, each under its own name.
    """
    found = {"appliance": appliance_commit()}
    if other_python is not None:
        python, names = other_python
        script = (
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        )
        done = subprocess.run(
            [str(python), "-c", script, *names], capture_output=True, text=True, check=True
        )
        found |= json.loads(done.stdout)
    for name, distribution in (packages or {}).items():
        found[name] = importlib.metadata.version(distribution)
    for name, command in (programs or {}).items():
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        line = ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]
        number = re.search(r"\d+(\.\d+)+", line)
        found[name] = number.group() if number else line
    return ", ".join(f"{name} {version}" for name, version in found.items())
