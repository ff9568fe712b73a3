"""The appliance's one error tree. Each class carries the HTTP status it maps to.

    ApplianceError (500)
    +-- InvalidInput (422)                 a field of the request is wrong; `field` names it
    +-- MalformedBody (400)                the body is not UTF-8 JSON, or is nested too deep
    +-- PayloadTooLarge (413)
    +-- NotFound (404)
    |   +-- ModelNotFound (404)            lists the models that do exist
    |   +-- PolicyNotFound (404)
    |   +-- TaskNotFound (404)
    +-- PolicyError (422)                  a policy file or edit is invalid (file, line, field)
    +-- PiiBlocked (422)                   a `block` rule fired; carries the privacy receipt
    +-- DetectorUnavailable (503)          PII detection failed or is not loaded: fail closed
    +-- InferenceError (502)
    |   +-- BackendUnavailable (503)
    |   +-- BackendBusy (503)              the model's wait queue is full; `retry_after` seconds
    |   +-- BackendTimeout (504)           connect, first-token or total timeout ran out
    |   +-- OutputInvalid (502)            the output failed its schema after every retry
    +-- ExternalRefused (403)              an external tier was not allowed, or text held PII
    +-- AuthError (401)                    no or bad credentials, expired session or key
    |   +-- LoginFailed (401)              wrong username or password, or SSO sign-in refused
    +-- Forbidden (403)                    signed in, but the role or key scopes do not allow it
    |   +-- CsrfFailed (403)               a state-changing browser request without its token
    |   +-- PasswordChangeRequired (403)   the account must set a new password first
    |   +-- PolicyNotAllowed (403)         the request named a policy its assignment does not allow
    +-- RateLimited (429)                  too many requests; `retry_after` seconds
    |   +-- LoginThrottled (429)           the account is in backoff or locked after failures
    |   +-- EscalationBudgetExhausted (429) external spend reached this month's escalation budget
    |   +-- AuthThrottled (429)            too many failed API keys from one address
    +-- Conflict (409)                     the named thing already exists
    +-- AuditError (500)                   the audit trail cannot be written, read or exported
    |   +-- AuditKeyError (500)            the checkpoint signing key is missing, unreadable, open
    +-- NotReady (503)
    +-- RateLimitsUnavailable (503)        the shared rate-limit counters are out of reach
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


class MalformedBody(ApplianceError):
    """The body cannot be read as JSON: not UTF-8, not JSON, or nested beyond the limit."""

    status_code = 400
    code = "malformed_body"


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
    """A policy file or edit does not validate (at start-up it stops the server)."""

    status_code = 422
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


class BackendTimeout(InferenceError):
    """A backend did not connect, start or finish within its timeout."""

    status_code = 504
    code = "backend_timeout"


class OutputInvalid(InferenceError):
    """The model's output did not validate against the task's schema, even after retries."""

    code = "output_invalid"


class TaskNotFound(NotFound):
    """The requested task template does not exist."""

    code = "task_not_found"


class ExternalRefused(ApplianceError):
    """An external (off-prem) model was refused: not allowed, or identifiers left in the text."""

    status_code = 403
    code = "external_refused"


class AuthError(ApplianceError):
    """No credentials, or credentials that are wrong, expired, revoked or disabled."""

    status_code = 401
    code = "unauthorized"


class LoginFailed(AuthError):
    """A sign-in attempt failed; the message never says which part was wrong.

    `reason` and `user_id` are for the audit trail only and never rendered.
    """

    code = "login_failed"

    def __init__(self, message: str, *, reason: str, user_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.user_id = user_id


class Forbidden(ApplianceError):
    """The caller is known but its role or key scopes do not allow this."""

    status_code = 403
    code = "forbidden"


class CsrfFailed(Forbidden):
    """A state-changing browser request lacked the session's CSRF token."""

    code = "csrf_failed"


class PasswordChangeRequired(Forbidden):
    """The account must choose a new password before doing anything else."""

    code = "password_change_required"


class PolicyNotAllowed(Forbidden):
    """The request named a policy that is neither the one assigned to the caller (key, team,
    task) nor one the admin allowed with that assignment: a caller cannot pick a weaker one."""

    code = "policy_not_allowed"


class RateLimited(ApplianceError):
    """Too many requests or failed sign-ins; retry after `retry_after` seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LoginThrottled(RateLimited):
    """Sign-in refused before the password is checked: the account waits out a backoff."""

    code = "login_throttled"

    def __init__(self, message: str, *, retry_after: int, user_id: str) -> None:
        super().__init__(message, retry_after=retry_after)
        self.user_id = user_id


class EscalationBudgetExhausted(RateLimited):
    """An escalation to an external tier was refused: this month's external spend reached the
    escalation budget, and the policy says `over_budget: refuse`. `retry_after` is the time
    until the budget resets (the next calendar month, UTC)."""

    code = "escalation_budget_exhausted"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        ApplianceError.__init__(self, message, field="model", **extra)
        self.retry_after = retry_after


class AuthThrottled(RateLimited):
    """Too many failed API-key authentications from one address: refused before the key is
    checked, until the window resets."""

    code = "auth_throttled"


class Conflict(ApplianceError):
    """The thing to create already exists."""

    status_code = 409
    code = "conflict"


class AuditError(ApplianceError):
    """The audit trail cannot be written, read or exported as asked."""

    code = "audit_error"


class AuditKeyError(AuditError):
    """The checkpoint signing key is unreadable, not Ed25519, or readable by others."""

    code = "audit_key_invalid"


class NotReady(ApplianceError):
    """The server has not finished starting (detector or database not ready)."""

    status_code = 503
    code = "not_ready"


class RateLimitsUnavailable(ApplianceError):
    """The rate-limit windows several replicas share (in the database) cannot be read or
    counted: the request is refused, never served without its limit."""

    status_code = 503
    code = "rate_limits_unavailable"


class DatabaseNotMigrated(ApplianceError):
    """The database schema is behind the code; `appliance db upgrade` fixes it."""

    code = "database_not_migrated"


class ServerAlreadyRunning(ApplianceError):
    """Another server process serves this SQLite database (SQLite means one server)."""

    code = "server_already_running"
