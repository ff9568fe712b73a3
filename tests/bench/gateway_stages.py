"""Time per stage of the request path inside `appliance serve` (for `gateway_profile --stages`).

Wraps the named functions with a timer before the app is built, serves as `appliance serve`
would, and writes each stage's timings (ms) as JSON to `$GATEWAY_STAGES_OUT` at exit. A stage
whose function does not exist in this checkout is skipped.
"""

from __future__ import annotations

import atexit
import cProfile
import functools
import importlib
import inspect
import json
import os
import signal
import sys
import time
from typing import Any

STAGES = {
    "asgi (whole request in the app)": "appliance.http.middleware:request_id_middleware",
    "guard (auth, key check)": "appliance.auth.guards:enforce_access",
    "handler": "appliance.api.openai_v1:OpenAIController.chat_completions",
    "gateway.chat": "appliance.gateway.core:Gateway.chat",
    "policy resolution": "appliance.gateway.core:Gateway.requested_policy",
    "prepare (policy, PII steps, route)": "appliance.gateway.core:Gateway._prepare",
    "backend call": "appliance.gateway.routing:RoutingSteps.generate",
    "success tail (audit + usage)": "appliance.gateway.core:Gateway._succeed",
    "audit append": "appliance.audit.store:AuditLog.append",
    "usage row (before: its own commit)": "appliance.gateway.routing:RoutingSteps.record_usage",
    "usage row (after: built)": "appliance.gateway.routing:RoutingSteps.usage_row",
    "input detection (all messages)": "appliance.gateway.core:Gateway.detect_many",
    "detection (one text)": "appliance.gateway.core:Gateway.detect",
    "actions (pseudonyms, placeholders)": "appliance.pii.actions:transform",
    "vault: new pseudonym": "appliance.pii.vault:PseudonymScope.placeholder",
    "answer scan and restore": "appliance.gateway.core:Gateway._finish_output",
    "key check (identity)": "appliance.auth.identity:Identity.key_principal",
    "request audit hook": "appliance.http.audit:RequestAudit.before_send",
}
TIMES: dict[str, list[float]] = {name: [] for name in STAGES}
PROFILE: cProfile.Profile | None = None
"""The event loop's thread under cProfile when `$GATEWAY_CPROFILE` names a file for it."""


def _timed(name: str, function: Any) -> Any:
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                TIMES[name].append((time.perf_counter() - started) * 1000)

        return run_async

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[name].append((time.perf_counter() - started) * 1000)

    return run


def _middleware(name: str, factory: Any) -> Any:
    @functools.wraps(factory)
    def build(app: Any) -> Any:
        return _timed(name, factory(app))

    return build


def install() -> None:
    for name, target in STAGES.items():
        if name == "handler":
            continue
        module_name, _, path = target.partition(":")
        owner: Any = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not hasattr(owner, attribute):
            print(f"stage skipped: {target}", file=sys.stderr)
            continue
        function = getattr(owner, attribute)
        wrapped = (_middleware if name.startswith("asgi") else _timed)(name, function)
        setattr(owner, attribute, wrapped)
        import appliance.app

        if getattr(appliance.app, attribute, None) is function:
            setattr(appliance.app, attribute, wrapped)  # imported by name into the app module
    # Handlers were decorated at import: patch the route handler's function as Litestar calls it.
    from appliance.api import openai_v1

    handler = openai_v1.OpenAIController.chat_completions
    handler._fn = _timed("handler", handler._fn)  # type: ignore[attr-defined]


def dump() -> None:
    if PROFILE is not None:
        PROFILE.disable()
        PROFILE.dump_stats(os.environ["GATEWAY_CPROFILE"])
    out = os.environ.get("GATEWAY_STAGES_OUT")
    if out:
        with open(out, "w") as handle:
            json.dump(TIMES, handle)


if __name__ == "__main__":
    install()
    atexit.register(dump)
    if os.environ.get("GATEWAY_CPROFILE"):
        PROFILE = cProfile.Profile()
        PROFILE.enable()
    # uvicorn raises the signal again after its shutdown: exit through Python, so atexit runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from appliance.__main__ import main

    sys.argv = ["appliance", *sys.argv[1:]]
    sys.exit(main())
