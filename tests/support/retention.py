"""A policy folder whose `default` policy retains request content (for history tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

from appliance.config import PROJECT_ROOT


def retaining_policies(
    tmp_path: Path, days: int = 7, names: tuple[str, ...] = ("default",)
) -> Path:
    """The shipped policies, with those in `names` keeping content encrypted for `days`."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for source in (PROJECT_ROOT / "policies").glob("*.yaml"):
        data = yaml.safe_load(source.read_text())
        if data["name"] in names:
            data["retention"] = {"content": "encrypted", "days": days}
        (folder / source.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return folder
