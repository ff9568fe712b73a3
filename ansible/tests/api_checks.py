"""Requests the deploy tests send through the appliance's TLS front (standard library only: it runs
with the control machine's python3).

    api_checks.py --connect ADDR:PORT --name NAME --cacert FILE --key-file FILE chat
    api_checks.py ... redact
    api_checks.py ... spread COUNT PREFIX      COUNT listings, request ids PREFIX-0.., one per line
    api_checks.py ... steady SECONDS [PREFIX]  listings and redactions back to back; fails on any
                                               request that does not succeed

The connection goes to ADDR:PORT while the certificate is verified for NAME against FILE (curl's
--resolve). Each check prints what it saw (counts and types, never the text) and exits non-zero
when the answer is not what the appliance must give.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
import time
from typing import Any

# Planted identifiers: a name, an e-mail address and a phone number the default policy acts on.
NAME = "Jane Doe"
EMAIL = "jane.doe@example.org"
PHONE = "212-555-0199"
PERSONAL = f"Write one short sentence to {NAME} ({EMAIL}, phone {PHONE}) about her meeting."


class Front:
    """HTTPS to one address, verified for one name, with the API key."""

    def __init__(self, connect: str, name: str, cacert: str, key: str) -> None:
        self.host, port = connect.rsplit(":", 1)
        self.port = int(port)
        self.name = name
        self.context = ssl.create_default_context(cafile=cacert)
        self.key = key

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, request_id: str = ""
    ) -> tuple[int, dict[str, str], Any]:
        """One request on a fresh connection: status, headers (lower-cased names), JSON body."""
        raw = socket.create_connection((self.host, self.port), timeout=300)
        conn = http.client.HTTPSConnection(self.name, self.port, timeout=300)
        conn.sock = self.context.wrap_socket(raw, server_hostname=self.name)
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        if request_id:
            headers["X-Request-Id"] = request_id
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return response.status, got, parsed


def fail(message: str) -> int:
    print(f"FAIL: {message}")
    return 1


def check_chat(front: Front) -> int:
    """A real generation through the policy path: an answer, and a receipt that names what was
    pseudonymized, in the body and in the headers."""
    status, headers, body = front.request(
        "POST",
        "/api/v1/chat",
        {"messages": [{"role": "user", "content": PERSONAL}], "max_tokens": 24},
    )
    if status != 200 or not isinstance(body, dict):
        return fail(f"chat: HTTP {status}")
    answer = (body.get("message") or {}).get("content", "")
    receipt = body.get("receipt") or {}
    usage = body.get("usage") or {}
    print(
        f"chat: HTTP 200, answer of {len(answer)} characters, {usage.get('completion_tokens')} "
        f"tokens, model {receipt.get('model')}, outcome {receipt.get('outcome')}, "
        f"entities {sorted(receipt.get('entities', {}))}, audit id {receipt.get('audit_id')}"
    )
    if not answer.strip() or not usage.get("completion_tokens"):
        return fail("chat: empty answer")
    if not {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= set(receipt.get("entities", {})):
        return fail(f"chat: receipt entities {receipt.get('entities')}")
    if receipt.get("outcome") != "redacted" or not receipt.get("audit_id"):
        return fail(f"chat: receipt outcome {receipt.get('outcome')}")
    header = json.loads(headers.get("x-privacy-receipt", "{}"))
    if header.get("entities") != receipt["entities"] or headers.get("x-audit-id") != str(
        receipt["audit_id"]
    ):
        return fail("chat: the receipt headers disagree with the body")
    return 0


def check_redact(front: Front) -> int:
    """Redaction under the default policy: no planted identifier in the text that comes back."""
    status, _, body = front.request("POST", "/api/v1/pii/redact", {"text": PERSONAL})
    if status != 200 or not isinstance(body, dict):
        return fail(f"redact: HTTP {status}")
    text = body.get("text", "")
    found = sorted({e.get("type") for e in body.get("entities", [])})
    receipt = body.get("receipt") or {}
    print(
        f"redact: HTTP 200, entities {found}, outcome {receipt.get('outcome')}, "
        f"audit id {receipt.get('audit_id')}"
    )
    leaked = [
        label
        for label, value in (("name", NAME), ("email", EMAIL), ("phone", PHONE))
        if value in text
    ]
    if leaked:
        return fail(f"redact: the answer still holds the planted {', '.join(leaked)}")
    if not {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= set(found) or not receipt.get("audit_id"):
        return fail("redact: entities or receipt missing")
    return 0


def spread(front: Front, count: int, prefix: str) -> int:
    """`count` authenticated listings with known request ids (to find in each replica's log)."""
    for i in range(count):
        request_id = f"{prefix}{i:04d}"
        status, _, _ = front.request("GET", "/api/v1/models", request_id=request_id)
        if status != 200:
            return fail(f"spread: request {request_id}: HTTP {status}")
        print(request_id)
    return 0


def steady(front: Front, seconds: float, prefix: str) -> int:
    """Requests back to back for `seconds`; every one must succeed."""
    end = time.monotonic() + seconds
    sent = failed = 0
    while time.monotonic() < end:
        request_id = f"{prefix}{sent:05d}"
        status: int | str
        try:
            if sent % 5 == 4:
                status, _, _ = front.request(
                    "POST", "/api/v1/pii/redact", {"text": PERSONAL}, request_id=request_id
                )
            else:
                status, _, _ = front.request("GET", "/api/v1/models", request_id=request_id)
        except OSError as exc:
            status = type(exc).__name__
        sent += 1
        if status != 200:
            failed += 1
            print(f"request {request_id}: {status}")
    print(f"steady: {sent} requests in {seconds:.0f} s, {failed} failed")
    return 1 if failed or not sent else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", required=True, help="ADDR:PORT to connect to")
    parser.add_argument("--name", required=True, help="the name the certificate must carry")
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--key-file", required=True, help="file holding the API key")
    parser.add_argument("check", choices=["chat", "redact", "spread", "steady"])
    parser.add_argument("args", nargs="*")
    args = parser.parse_args()
    with open(args.key_file, encoding="utf-8") as handle:
        key = handle.read().strip()
    front = Front(args.connect, args.name, args.cacert, key)
    if args.check == "chat":
        return check_chat(front)
    if args.check == "redact":
        return check_redact(front)
    if args.check == "spread":
        return spread(front, int(args.args[0]), args.args[1])
    return steady(front, float(args.args[0]), args.args[1] if len(args.args) > 1 else "steady-")


if __name__ == "__main__":
    sys.exit(main())
