"""`/api/v1/documents` on the real app: each type round-trips, hostile files get 422, deletion
is real and audited, expired documents are swept, owners only, tasks run on `document_id`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import update
from sqlmodel import Session, select

from appliance.auth import apikeys
from appliance.auth.roles import SCOPES
from appliance.db.models import AuditEvent, utcnow
from appliance.documents.models import DocumentRow
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser
from tests.unit.documents.samples import docx_bomb, docx_bytes, eml_bytes, pdf_bytes

NOTE = "Quarterly review moved to Thursday in room 4; bring the budget figures."


def upload(client: httpx.Client, name: str, data: bytes, **kwargs: Any) -> httpx.Response:
    return client.post("/api/v1/documents", files={"file": (name, data)}, **kwargs)


def audit_rows(app: RunningAppliance, action: str) -> list[AuditEvent]:
    with Session(app.services.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)))


def other_key_client(app: RunningAppliance) -> httpx.Client:
    _, key = apikeys.create(
        app.services.engine, app.server.app.state.identity.pepper, name="other", scopes=list(SCOPES)
    )
    return httpx.Client(base_url=app.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def test_each_type_round_trips(appliance: RunningAppliance) -> None:
    files = {
        "minutes.pdf": (pdf_bytes([NOTE, "Page two: action items"]), "pdf"),
        "offer.docx": (docx_bytes([NOTE], table=[["Grade", "B2"]]), "docx"),
        "thread.eml": (eml_bytes(NOTE), "eml"),
        "notes.md": (f"# Notes\n\n{NOTE}\n".encode(), "markdown"),
        "notes.txt": (NOTE.encode(), "text"),
    }
    ids = {}
    for name, (data, kind) in files.items():
        response = upload(appliance.client, name, data)
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["name"], body["kind"], body["size_bytes"]) == (name, kind, len(data))
        assert body["expires_at"] > body["created_at"]
        ids[name] = body["id"]
        text = appliance.client.get(f"/api/v1/documents/{body['id']}/text").json()["text"]
        assert NOTE in text
    assert appliance.client.get(f"/api/v1/documents/{ids['minutes.pdf']}").json()["pages"] == 2
    listed = appliance.client.get("/api/v1/documents").json()["documents"]
    assert sorted(d["id"] for d in listed) == sorted(ids.values())
    # At rest: neither the name nor the text is stored in the clear.
    with Session(appliance.services.engine) as session:
        for row in session.exec(select(DocumentRow)):
            assert b"Quarterly" not in row.text_sealed
            assert b"minutes" not in row.name_sealed
    # Audited with ids, sizes, types and hashes only.
    uploaded = audit_rows(appliance, "document.uploaded")
    assert sorted(r.target or "" for r in uploaded) == sorted(ids.values())
    for row in uploaded:
        assert set(row.details) >= {"kind", "size_bytes", "sha256", "expires_at"}
        assert "Quarterly" not in str(row.details) and ".pdf" not in str(row.details)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("report.pdf", b"not a pdf at all", "named as pdf"),
        ("tool.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "binary content"),
        ("broken.pdf", pdf_bytes(["some text here"])[:300], "pdf"),
        ("bomb.docx", docx_bomb(150_000_000), "unpacks to more than"),
        ("locked.pdf", pdf_bytes(["secret"], password="pw"), "password-protected"),
        ("empty.txt", b"", "empty"),
    ],
)
def test_hostile_or_malformed_files_get_422(
    appliance: RunningAppliance, name: str, data: bytes, message: str
) -> None:
    response = upload(appliance.client, name, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "file"
    assert message in error["message"]
    assert appliance.client.get("/api/v1/documents").json()["documents"] == []


def test_size_and_page_limits(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(document_max_bytes=2_000, document_max_pages=2)
    too_big = upload(app.client, "big.txt", b"a" * 2_001)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["field"] == "file"
    pages = upload(app.client, "long.pdf", pdf_bytes(["one", "two", "three"]))
    assert pages.status_code == 422
    assert "3 pages; at most 2" in pages.json()["error"]["message"]


def _sqlite_files(app: RunningAppliance) -> bytes:
    url = app.services.engine.url
    path = Path(str(url.database))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_deletion_is_real_and_audited(appliance: RunningAppliance) -> None:
    doc_id = upload(appliance.client, "memo.txt", NOTE.encode()).json()["id"]
    with Session(appliance.services.engine) as session:
        sealed = session.exec(select(DocumentRow).where(DocumentRow.id == doc_id)).one()
        probe = sealed.text_sealed[12:44]  # a slice of the ciphertext itself
    sqlite = appliance.services.engine.dialect.name == "sqlite"
    if sqlite:
        assert probe in _sqlite_files(appliance)
    response = appliance.client.delete(f"/api/v1/documents/{doc_id}")
    assert response.status_code == 204
    assert appliance.client.get(f"/api/v1/documents/{doc_id}").status_code == 404
    assert appliance.client.delete(f"/api/v1/documents/{doc_id}").status_code == 404
    with Session(appliance.services.engine) as session:
        assert session.exec(select(DocumentRow).where(DocumentRow.id == doc_id)).first() is None
    if sqlite:
        # Not in the database file nor in its write-ahead log: the bytes are gone.
        assert probe not in _sqlite_files(appliance)
    [deleted] = audit_rows(appliance, "document.deleted")
    assert deleted.target == doc_id
    assert deleted.details["sha256"] and "Quarterly" not in str(deleted.details)


def test_expired_documents_are_swept(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(document_sweep_interval_s=0.2)
    keep = upload(app.client, "keep.txt", b"stays").json()
    assert keep["expires_at"] > (utcnow() + timedelta(hours=23)).isoformat()  # the 24 h default
    gone = upload(app.client, "old.txt", b"goes").json()["id"]
    with Session(app.services.engine) as session:
        session.execute(
            update(DocumentRow)
            .where(DocumentRow.id == gone)  # type: ignore[arg-type]
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    deadline = time.monotonic() + 30
    while not audit_rows(app, "document.expired"):
        assert time.monotonic() < deadline, "the expired document was not swept"
        time.sleep(0.1)
    assert app.client.get(f"/api/v1/documents/{gone}").status_code == 404
    assert app.client.get(f"/api/v1/documents/{keep['id']}").status_code == 200
    [expired] = audit_rows(app, "document.expired")
    assert (expired.target, expired.actor) == (gone, "system")


def test_policy_retention_days_set_the_expiry(
    start_appliance: Callable[..., RunningAppliance], tmp_path: Path
) -> None:
    from appliance.config import PROJECT_ROOT

    policies = tmp_path / "policies"
    policies.mkdir()
    for source in (PROJECT_ROOT / "policies").glob("*.yaml"):
        (policies / source.name).write_text(source.read_text())
    default = policies / "default.yaml"
    policy = yaml.safe_load(default.read_text())
    assert policy["retention"]["content"] == "never"
    policy["retention"] = {"content": "encrypted", "days": 30}
    default.write_text(yaml.safe_dump(policy))
    app = start_appliance(policies_dir=policies)
    body = upload(app.client, "a.txt", b"kept a month").json()
    assert body["expires_at"] > (utcnow() + timedelta(days=29)).isoformat()


def test_only_the_owner_sees_a_document(appliance: RunningAppliance) -> None:
    doc_id = upload(appliance.client, "mine.txt", NOTE.encode()).json()["id"]
    with other_key_client(appliance) as other:
        assert other.get("/api/v1/documents").json()["documents"] == []
        for path in (f"/api/v1/documents/{doc_id}", f"/api/v1/documents/{doc_id}/text"):
            assert other.get(path).status_code == 404
        assert other.delete(f"/api/v1/documents/{doc_id}").status_code == 404
        task = other.post("/api/v1/tasks/redact", json={"document_id": doc_id})
        assert task.status_code == 404
        assert task.json()["error"]["field"] == "document_id"
    assert appliance.client.get(f"/api/v1/documents/{doc_id}").status_code == 200


def test_admin_is_content_blind(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    staff = browser_for(appliance, "staff")
    admin = browser_for(appliance, "admin")
    response = staff.post("/api/v1/documents", files={"file": ("hr.txt", NOTE.encode())})
    assert response.status_code == 201, response.text
    doc_id = response.json()["id"]
    assert staff.client.get(f"/api/v1/documents/{doc_id}/text").json()["text"] == NOTE
    assert admin.client.get(f"/api/v1/documents/{doc_id}/text").status_code == 404
    assert admin.client.get("/api/v1/documents").json()["documents"] == []
    assert admin.post(f"/api/v1/documents/{doc_id}", headers={}).status_code in (404, 405)
    deleted = admin.client.delete(
        f"/api/v1/documents/{doc_id}", headers={"X-CSRF-Token": admin.csrf}
    )
    assert deleted.status_code == 404
    assert staff.client.get(f"/api/v1/documents/{doc_id}").status_code == 200


def test_task_with_document_id_runs_on_the_real_model(appliance: RunningAppliance) -> None:
    text = "Jane Roe (jane.roe@example.com) asked to move the budget review to Thursday."
    doc_id = upload(appliance.client, "mail.docx", docx_bytes([text])).json()["id"]
    response = appliance.client.post(
        "/api/v1/tasks/classify",
        json={"document_id": doc_id, "params": {"labels": ["meeting", "recipe"]}},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"]["label"] in ("meeting", "recipe")
    assert body["receipt"]["entities"].get("EMAIL_ADDRESS") == 1
    # The model saw the document's words, with the identifier already handled by the policy.
    seen = " ".join(m.content for r in appliance.backend.requests for m in r.messages)
    assert "budget review" in seen
    assert "jane.roe@example.com" not in seen
