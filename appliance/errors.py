"""The appliance's one error tree. Each class carries the HTTP status it maps to.

    ApplianceError (500)
    +-- InvalidInput (422)                 a field of the request is wrong; `field` names it
    +-- PayloadTooLarge (413)
    +-- NotFound (404)
    |   +-- ModelNotFound (404)            lists the models that do exist
    |   +-- PolicyNotFound (404)
    +-- PolicyError (500)                  a policy file or edit is invalid (file, line, field)
    +-- PiiBlocked (422)                   a `block` rule fired; carries the privacy receipt
    +-- DetectorUnavailable (503)          PII detection failed or is not loaded: fail closed
    +-- InferenceError (502)
    |   +-- BackendUnavailable (503)
    |   +-- BackendBusy (503)              the model's wait queue is full; `retry_after` seconds
    +-- NotReady (503)
    +-- DatabaseNotMigrated (500)          start-up refused until `appliance db upgrade` runs

Domain code raises these; the web layer renders them (JSON for the API). Nothing in the domain
raises an HTTP exception.
"""

from __future__ import annotations

from typing import Any


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """The `{"error": {...}}` body every API error uses."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return {"error": body}


class InvalidInput(ApplianceError):
    """A request field is missing or malformed."""

    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(ApplianceError):
    """The request body exceeds the configured limit."""

    status_code = 413
    code = "payload_too_large"


class NotFound(ApplianceError):
    """A named thing does not exist."""

    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    """The requested model is not registered; the error lists those that are."""

    code = "model_not_found"


class PolicyNotFound(NotFound):
    """The requested policy does not exist."""

    code = "policy_not_found"


class PolicyError(ApplianceError):
    """A policy file or edit does not validate."""

    code = "policy_invalid"


class PiiBlocked(ApplianceError):
    """A policy rule with action `block` matched; nothing was sent to a model."""

    status_code = 422
    code = "pii_blocked"


class DetectorUnavailable(ApplianceError):
    """PII detection is not loaded or failed for this request; the request fails closed."""

    status_code = 503
    code = "detector_unavailable"


class InferenceError(ApplianceError):
    """A model backend failed to produce an answer."""

    status_code = 502
    code = "inference_failed"


class BackendUnavailable(InferenceError):
    """A backend cannot be reached or its model cannot be loaded."""

    status_code = 503
    code = "backend_unavailable"


class BackendBusy(InferenceError):
    """The model's wait queue is full; the caller should retry after `retry_after` seconds."""

    status_code = 503
    code = "backend_busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(ApplianceError):
    """The server has not finished starting (detector or database not ready)."""

    status_code = 503
    code = "not_ready"


class DatabaseNotMigrated(ApplianceError):
    """The database schema is behind the code; `appliance db upgrade` fixes it."""

    code = "database_not_migrated"
