"""What every UI handler shares: the caller as the gateway sees it, page-or-partial rendering.

Pages extend `base.html`; partials start with `_`. A handler renders the partial when htmx asks
(`HX-Request`) and the whole page otherwise.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Template

STAFF_ROLES = ("staff", "admin")
"""Who may run tasks from the workspace (the same roles the task API allows)."""


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent the request (it then wants a fragment, not a page)."""
    return request.headers.get("hx-request") == "true"


def render(
    request: Request[Any, Any, Any],
    page: str,
    partial: str | None = None,
    /,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """`partial` for htmx requests (when given), else the whole `page`."""
    name = partial if partial is not None and is_htmx(request) else page
    return Template(
        template_name=name,
        context=context,
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def fragment(
    template: str, /, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Template:
    """Always the partial `template` (for routes only htmx calls)."""
    return Template(
        template_name=template,
        context=context,
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
