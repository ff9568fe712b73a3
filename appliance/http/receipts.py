"""The privacy receipt as response headers, for every API format."""

from __future__ import annotations

import json
from typing import Any


def receipt_headers(receipt: dict[str, Any]) -> dict[str, str]:
    """`X-Privacy-Receipt` (compact JSON: policy@version, counts, actions, tier, model) and
    `X-Audit-Id`. Entity types and counts only: a header never carries a value."""
    policy = receipt.get("policy") or {}
    compact = {
        "policy": f"{policy.get('name')}@{policy.get('version')}" if policy else None,
        "entities": receipt.get("entities", {}),
        "actions": receipt.get("actions", {}),
        "outcome": receipt.get("outcome"),
        "tier": (receipt.get("route") or {}).get("tier"),
        "model": receipt.get("model"),
    }
    headers = {"X-Privacy-Receipt": json.dumps(compact, separators=(",", ":"), sort_keys=True)}
    if receipt.get("audit_id"):
        headers["X-Audit-Id"] = str(receipt["audit_id"])
    return headers
