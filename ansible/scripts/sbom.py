"""Write a CycloneDX 1.5 JSON bill of materials for an offline bundle directory.

Components come from what the bundle really holds: every wheel's own metadata (name, version,
licence, SHA-256 of the file), every GGUF model file, and the npm packages the static assets were
built from (web/package-lock.json). Standard library only, so it runs wherever the bundle builds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import uuid
import zipfile
from datetime import UTC, datetime
from email.parser import HeaderParser
from pathlib import Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_component(path: Path) -> dict[str, object]:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = HeaderParser().parsestr(archive.read(name).decode("utf-8", "replace"))
    project, version = meta["Name"], meta["Version"]
    normalised = project.lower().replace("_", "-").replace(".", "-")
    component: dict[str, object] = {
        "type": "library",
        "bom-ref": f"pkg:pypi/{normalised}@{version}",
        "name": project,
        "version": version,
        "purl": f"pkg:pypi/{normalised}@{version}",
        "hashes": [{"alg": "SHA-256", "content": _sha256(path)}],
        "properties": [{"name": "bundle:file", "value": f"wheelhouse/{path.name}"}],
    }
    licence = meta.get("License-Expression") or meta.get("License")
    if licence and len(licence) < 100 and "\n" not in licence:
        component["licenses"] = [{"expression": licence.strip()}]
    return component


def _npm_components(lock_file: Path) -> list[dict[str, object]]:
    if not lock_file.is_file():
        return []
    lock = json.loads(lock_file.read_text(encoding="utf-8"))
    found = []
    for key, info in sorted(lock.get("packages", {}).items()):
        if not key.startswith("node_modules/"):
            continue
        name = key.removeprefix("node_modules/")
        purl = f"pkg:npm/{name.replace('@', '%40')}@{info['version']}"
        component: dict[str, object] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": info["version"],
            "purl": purl,
        }
        if info.get("license"):
            component["licenses"] = [{"expression": info["license"]}]
        found.append(component)
    return found


def build(bundle: Path, version: str, lock_file: Path) -> dict[str, object]:
    """The CycloneDX document for the bundle directory `bundle`."""
    components = [_wheel_component(p) for p in sorted((bundle / "wheelhouse").glob("*.whl"))]
    for model in sorted((bundle / "models").glob("*.gguf")):
        components.append(
            {
                "type": "machine-learning-model",
                "bom-ref": f"model:{model.name}",
                "name": model.stem,
                "hashes": [{"alg": "SHA-256", "content": _sha256(model)}],
                "properties": [{"name": "bundle:file", "value": f"models/{model.name}"}],
            }
        )
    components.extend(_npm_components(lock_file))
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "component": {"type": "application", "name": "appliance", "version": version},
        },
        "components": components,
    }


def main() -> None:
    """Command line: sbom.py BUNDLE_DIR VERSION LOCK_FILE > sbom.cdx.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("version")
    parser.add_argument("lock_file", type=Path)
    args = parser.parse_args()
    print(json.dumps(build(args.bundle, args.version, args.lock_file), indent=2))


if __name__ == "__main__":
    main()
