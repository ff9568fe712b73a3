"""`appliance eval sets | upload | samples | run | show`: the workbench from the shell.

`eval run` runs in this process (the embedded models, the PII detector, the same gateway path)
with a progress bar on stderr; a server's runner leaves such runs alone. An interrupted run goes
on with `appliance eval run --resume RUN`, without redoing finished items. The actor in the audit
trail is `cli:<user>` of the operating-system account.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.errors import InvalidInput

BAR_WIDTH = 30


def _actor() -> Any:
    # Deferred: the app's services load only when a command runs.
    from appliance.auth.actor import Actor

    try:
        name = f"cli:{getpass.getuser()}"[:200]
    except (KeyError, OSError):
        name = "cli"
    return Actor(id=name, role="admin", source="cli")


@asynccontextmanager
async def _services(settings: Settings, *, detector: bool) -> AsyncIterator[Any]:
    # Deferred: the app's services load only when a command runs.
    from appliance.db.engine import ensure_migrated, make_engine
    from appliance.inference.embedded import embedded_backend
    from appliance.wiring import build_appliance

    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
        services = build_appliance(settings, engine, [embedded_backend(settings)])
        if detector:
            # Deferred: the app's services load only when a command runs.
            from appliance.pii.detector import load_detector

            services.detector.set_ready(
                await asyncio.to_thread(load_detector, settings.spacy_model, settings.phone_regions)
            )
        try:
            yield services
        finally:
            await services.registry.aclose()
    finally:
        engine.dispose()


def progress_line(progress: dict[str, Any]) -> str:
    """`[#####-----] 12/32  37.5%  4.1/min  ETA 40 s` for one progress report."""
    total = progress["total"] or 1
    filled = round(BAR_WIDTH * progress["done"] / total)
    rate = progress.get("rate_per_min")
    eta = progress.get("eta_s")
    return (
        f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {progress['done']}/{progress['total']}"
        f"  {progress['percent']:5.1f}%"
        + (f"  {rate:.1f}/min" if rate else "")
        + (f"  ETA {eta} s" if eta else "")
        + (f"  ({progress['failed']} failed)" if progress.get("failed") else "")
    )


def _print_report(report: dict[str, Any]) -> None:
    metrics = report["metrics"]
    print(
        f"run {report['id']}  {report['set']} v{report['version']}  {report['task']}  "
        f"{report['status']}"
    )
    print(
        f"{'model':<24} {metrics['quality_name']:>12} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'tok/s':>7} {'$/1k on-prem':>13} {'$/1k frontier':>14}"
    )
    for name, m in metrics["models"].items():
        print(
            f"{name:<24} {m['quality'] * 100:11.1f}% {m['latency_p50_ms']:8.0f} "
            f"{m['latency_p95_ms']:8.0f} {m['tokens_per_s']:7.0f} "
            f"{m['cost_per_1k_onprem']:13.5f} {m['cost_per_1k_frontier']:14.5f}"
        )
    rec = report["recommendation"]
    if rec.get("model"):
        print(
            f"recommendation (bar {rec['bar']:.2f}): {rec['model']} at {rec['quality']:.3f}, "
            f"margin {rec['margin']:+.3f}"
        )
    else:
        print(f"recommendation (bar {rec['bar']:.2f}): no model clears the bar")
    cal = report.get("calibration")
    if cal and cal.get("threshold") is not None:
        print(
            f"calibration: {cal['small']} -> {cal['strong']} below confidence "
            f"{cal['threshold']:.2f}: {cal['escalation_rate']:.0%} escalated, "
            f"quality {cal['quality']:.3f}"
        )


def cmd_sets(settings: Settings, _: argparse.Namespace) -> int:
    """List the golden sets."""
    # Deferred: the app's services load only when a command runs.
    from appliance.db.engine import ensure_migrated, make_engine
    from appliance.eval.goldensets import list_sets

    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
        for row in list_sets(engine):
            print(f"{row['name']}\t{row['task']}\tv{row['version']}\t{row['items']} items")
    finally:
        engine.dispose()
    return 0


def cmd_upload(settings: Settings, args: argparse.Namespace) -> int:
    """Upload a JSONL or CSV file as a new set or a new version."""
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    params: dict[str, Any] = {}
    if args.params:
        try:
            params = json.loads(args.params)
        except ValueError:
            raise InvalidInput("--params must be a JSON object", field="params") from None
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl" if path.suffix else None

    async def go() -> dict[str, Any]:
        async with _services(settings, detector=False) as services:
            result: dict[str, Any] = await services.evaluation.upload(
                _actor(),
                name=args.name or path.stem,
                data=data,
                task=args.task,
                fmt=fmt,
                mode=args.mode,
                policy=args.policy,
                params=params,
            )
            return result

    body = asyncio.run(go())
    print(f"{body['name']}: version {body['version']}, {body['items']} items")
    return 0


def cmd_samples(settings: Settings, _: argparse.Namespace) -> int:
    """Load the shipped sample sets."""
    # Deferred: the app's services load only when a command runs.
    from appliance.eval.samples import load_samples

    async def go() -> list[str]:
        async with _services(settings, detector=False) as services:
            return await load_samples(services.evaluation, _actor())

    created = asyncio.run(go())
    print(f"loaded: {', '.join(created)}" if created else "the sample sets are already loaded")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Run a set against models here, with a progress bar on stderr."""
    if args.resume is None and (args.set is None or not args.models):
        raise InvalidInput("give SET and --models, or --resume RUN", field="models")
    tty = sys.stderr.isatty()

    def show(progress: dict[str, Any]) -> None:
        end = "\r" if tty and progress["done"] < progress["total"] else "\n"
        print(progress_line(progress), end=end, file=sys.stderr, flush=True)

    async def go() -> dict[str, Any]:
        async with _services(settings, detector=True) as services:
            evaluation = services.evaluation
            if args.resume is not None:
                run_id = args.resume
            else:
                started = await evaluation.start(
                    _actor(),
                    set_name=args.set,
                    models=args.models.split(","),
                    version=args.version,
                    limit=args.limit,
                    judge=args.judge,
                    wake=False,
                    runner="cli",
                )
                run_id = started["id"]
                print(f"run {run_id}", file=sys.stderr)
            run = await asyncio.to_thread(evaluation.runs.get, run_id)
            await evaluation.runner.run(run, progress=show, pause_s=0)
            report: dict[str, Any] = await asyncio.to_thread(
                lambda: evaluation.report(run_id, bar=args.bar)
            )
            return report

    report = asyncio.run(go())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    return 0 if report["status"] == "completed" else 1


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    """Print a run's metrics, recommendation and calibration."""

    async def go() -> dict[str, Any]:
        async with _services(settings, detector=False) as services:
            report: dict[str, Any] = await asyncio.to_thread(
                lambda: services.evaluation.report(args.run, bar=args.bar)
            )
            return report

    report = asyncio.run(go())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    return 0


def add_commands(sub: Any) -> None:
    """Register `appliance eval ...` on the top-level subparsers."""
    group = sub.add_parser("eval", help="golden sets, model comparison runs, recommendations")
    commands = group.add_subparsers(dest="eval_cmd", required=True)
    commands.add_parser("sets", help="list golden sets").set_defaults(func=cmd_sets)
    upload = commands.add_parser("upload", help="upload a JSONL or CSV golden set")
    upload.add_argument("file")
    upload.add_argument("--name", help="set name (default: the file name)")
    upload.add_argument("--task", choices=["classify", "extract", "summarize", "ask"])
    upload.add_argument("--mode", choices=["create", "replace", "append"], default="create")
    upload.add_argument("--policy", help="policy the set's inputs run under (default policy)")
    upload.add_argument("--params", help="task parameters as JSON (labels, schema, question)")
    upload.set_defaults(func=cmd_upload)
    commands.add_parser("samples", help="load the shipped sample sets").set_defaults(
        func=cmd_samples
    )
    run = commands.add_parser("run", help="run a set against models (progress on stderr)")
    run.add_argument("set", nargs="?")
    run.add_argument("--models", help="comma-separated model names")
    run.add_argument("--limit", type=int, help="only the first N items")
    run.add_argument("--version", type=int, help="set version (default: latest)")
    run.add_argument("--judge", action="store_true", help="judge verdicts (summarize, ask)")
    run.add_argument("--bar", type=float, default=0.8, help="quality bar for the recommendation")
    run.add_argument("--resume", metavar="RUN", help="finish an interrupted run")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.set_defaults(func=cmd_run)
    show = commands.add_parser("show", help="a run's metrics and recommendation")
    show.add_argument("run")
    show.add_argument("--bar", type=float, default=0.8)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
