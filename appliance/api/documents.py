"""`/api/v1/documents`: upload (text extracted, sealed at rest), list, read, delete.

Every caller sees only their own documents; an admin is content-blind like everyone else, so
another user's document is simply absent (404), never forbidden (403), which would confirm it.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.documents.service import Documents
from appliance.errors import InvalidInput
from appliance.http.middleware import request_id_of

UPLOAD_CEILING_BYTES = 101_000_000
"""Body ceiling of the upload route; `document_max_bytes` (at most 100 MB) is the real limit."""


class DocumentsController(Controller):
    """Documents for tasks (`document_id`), through the caller's own store."""

    path = "/api/v1/documents"
    tags = ["documents"]
    opt = access(roles=("staff", "admin"), scopes=("documents",))

    @post(
        "/",
        summary="Upload a document (PDF, DOCX, .eml, TXT, Markdown)",
        description=(
            "Multipart form with one `file`. The type is read from the content, not the name. "
            "The text is extracted, encrypted at rest and kept until `expires_at` (the policy's "
            "retention days, or 24 h when the policy keeps no content). 413 above the size "
            "limit; 422 for an unsupported, malformed, too long or password-protected file."
        ),
        status_code=201,
        request_max_body_size=UPLOAD_CEILING_BYTES,
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        documents: NamedDependency[Documents],
    ) -> dict[str, Any]:
        """Store one document; returns its metadata."""
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the document as the multipart field `file`", field="file")
        content = await upload.read()
        info = await documents.upload(
            actor_for(request),
            name=(upload.filename or "document")[:255],
            data=content,
            request_id=request_id_of(request),
        )
        return info.public()

    @get("/", summary="List your documents")
    async def list_documents(
        self, request: Request[Any, Any, Any], documents: NamedDependency[Documents]
    ) -> dict[str, Any]:
        """The caller's documents, newest first (metadata only)."""
        infos = await documents.owned(actor_for(request))
        return {"documents": [info.public() for info in infos]}

    @get("/{doc_id:str}", summary="One of your documents (metadata)")
    async def get_document(
        self,
        doc_id: FromPath[str],
        request: Request[Any, Any, Any],
        documents: NamedDependency[Documents],
    ) -> dict[str, Any]:
        """Metadata of one of the caller's documents; 404 for any other."""
        info = await documents.get(actor_for(request), doc_id)
        return info.public()

    @get("/{doc_id:str}/text", summary="The extracted text of one of your documents")
    async def get_text(
        self,
        doc_id: FromPath[str],
        request: Request[Any, Any, Any],
        documents: NamedDependency[Documents],
    ) -> dict[str, Any]:
        """The decrypted text, for its owner only."""
        actor = actor_for(request)
        text = await documents.text_for(actor, doc_id)
        return {"id": doc_id, "text": text}

    @delete("/{doc_id:str}", summary="Delete one of your documents for good", status_code=204)
    async def delete_document(
        self,
        doc_id: FromPath[str],
        request: Request[Any, Any, Any],
        documents: NamedDependency[Documents],
    ) -> None:
        """Remove the ciphertext and audit the deletion."""
        await documents.delete(actor_for(request), doc_id, request_id=request_id_of(request))
