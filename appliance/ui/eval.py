"""`/admin/eval`: golden sets, runs with live progress, charts, recommendation and Apply (admins).

Pages show metadata and metrics only: golden content and model outputs stay sealed (admins are
content-blind). Charts are server-rendered SVG; their geometry is computed here, colours come
from CSS classes, so nothing inline breaks the CSP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, URLEncodedBody
from litestar.response import Template
from sqlalchemy import Engine

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import InvalidInput
from appliance.eval import goldensets
from appliance.eval.samples import load_samples
from appliance.eval.service import DEFAULT_BAR, Evaluation, check_bar
from appliance.eval.upload import UPLOAD_CEILING_BYTES, upload_set
from appliance.inference.registry import Registry
from appliance.ui import charts
from appliance.ui.common import fragment, render

WIDTH, HEIGHT = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 44
LATENCY_BUCKETS = 8


@dataclass(frozen=True)
class Dot:
    """A labelled point of a scatter or curve chart."""

    x: float
    y: float
    label: str
    series: int
    shown: str


@dataclass(frozen=True)
class Plot:
    """An x/y chart: axes ticks, points, an optional line through them, a marked point."""

    title: str
    x_label: str
    y_label: str
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    dots: list[Dot]
    line: str
    bar_y: float | None
    bar_label: str
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        """No points to draw."""
        return not self.dots


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    if high <= low:
        return (start + end) / 2
    return round(start + (value - low) / (high - low) * (end - start), 1)


def plot(
    title: str,
    points: list[tuple[float, float, str, int, str]],
    *,
    x_label: str,
    y_label: str,
    x_max: float | None = None,
    x_unit: str = "",
    bar: float | None = None,
    joined: bool = False,
) -> Plot:
    """Points (x, y in 0..1, label, series, hover text) on axes; `bar` draws a dashed level."""
    top_x = x_max if x_max is not None else charts._nice_max(max((p[0] for p in points), default=0))
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP
    dots = [
        Dot(_scale(x, 0, top_x, x0, x1), _scale(y, 0, 1, y0, y1), label, series, shown)
        for x, y, label, series, shown in points
    ]
    ordered = sorted(dots, key=lambda d: (d.x, -d.y))
    line = " ".join(f"{d.x},{d.y}" for d in ordered) if joined else ""
    x_ticks = [
        (_scale(top_x * k / 4, 0, top_x, x0, x1), charts._fmt(top_x * k / 4, x_unit))
        for k in range(5)
    ]
    y_ticks = [(_scale(k / 4, 0, 1, y0, y1), f"{k * 25}%") for k in range(5)]
    return Plot(
        title,
        x_label,
        y_label,
        x_ticks,
        y_ticks,
        dots,
        line,
        _scale(bar, 0, 1, y0, y1) if bar is not None else None,
        f"bar {bar:.0%}" if bar is not None else "",
    )


def latency_chart(per_model: dict[str, dict[str, Any]]) -> charts.Chart:
    """How many requests of each model fell in each latency bucket (a histogram per model)."""
    models = list(per_model)
    values = [v for m in models for v in per_model[m].get("latencies_ms", [])]
    top = charts._nice_max(max(values, default=0.0))
    width = top / LATENCY_BUCKETS
    groups: list[tuple[str, list[float]]] = []
    for b in range(LATENCY_BUCKETS):
        low, high = b * width, (b + 1) * width
        label = f"<{charts._fmt(high, ' ms')}"
        counts = [
            float(
                sum(
                    1
                    for v in per_model[m].get("latencies_ms", [])
                    if low <= v < high or (b == LATENCY_BUCKETS - 1 and v >= high)
                )
            )
            for m in models
        ]
        groups.append((label, counts))
    return charts.grouped("Latency distribution (requests per bucket)", groups, legend=models)


@dataclass(frozen=True)
class Matrix:
    """A confusion matrix as table cells with a shade class (0..4) each."""

    model: str
    labels: list[str]
    columns: list[str]
    rows: list[list[tuple[int, int]]]


def confusion(model: str, body: dict[str, Any]) -> Matrix:
    """Cells (count, shade) of one model's confusion matrix, shaded by row share."""
    rows: list[list[tuple[int, int]]] = []
    for counts in body["matrix"]:
        total = sum(counts) or 1
        rows.append([(c, min(4, round(4 * c / total))) for c in counts])
    return Matrix(model, body["labels"], body["columns"], rows)


def run_context(evaluation: Evaluation, run_id: str, bar: float) -> dict[str, Any]:
    """Everything the run page draws."""
    report = evaluation.report(run_id, bar=bar)
    per_model: dict[str, dict[str, Any]] = report["metrics"]["models"]
    quality_name = report["metrics"]["quality_name"]
    models = report["models"]
    scatter = plot(
        f"{quality_name.capitalize()} against on-prem cost per 1,000 requests",
        [
            (
                m["cost_per_1k_onprem"],
                m["quality"],
                name,
                models.index(name),
                f"{name}: {m['quality']:.0%} at ${m['cost_per_1k_onprem']:.4f}",
            )
            for name, m in per_model.items()
            if m.get("items")
        ],
        x_label="on-prem cost per 1,000 requests",
        y_label=quality_name,
        x_unit="$",
        bar=bar,
    )
    curve = None
    calibration = report.get("calibration")
    if calibration and calibration.get("curve"):
        curve = plot(
            f"{quality_name.capitalize()} against escalation rate "
            f"({calibration['small']} escalating to {calibration['strong']})",
            [
                (
                    p["escalation_rate"],
                    p["quality"],
                    f"t={p['threshold']:.2f}",
                    1 if p["threshold"] == calibration.get("threshold") else 0,
                    f"threshold {p['threshold']:.2f}: {p['escalation_rate']:.0%} escalated, "
                    f"{p['quality']:.0%} right",
                )
                for p in calibration["curve"]
            ],
            x_label="escalation rate",
            y_label=quality_name,
            x_max=1.0,
            x_unit="",
            bar=bar,
            joined=True,
        )
    matrices = [
        confusion(name, m["confusion"]) for name, m in per_model.items() if m.get("confusion")
    ]
    return {
        "run": report,
        "bar": bar,
        "scatter": scatter,
        "latency": latency_chart(per_model),
        "curve": curve,
        "matrices": matrices,
        "quality_name": quality_name,
    }


def index_context(evaluation: Evaluation, engine: Engine, registry: Registry) -> dict[str, Any]:
    """The sets, the recent runs, the models to choose from and the overrides in force."""
    return {
        "sets": goldensets.list_sets(engine),
        "runs": evaluation.runs.list_runs(limit=20),
        "models": registry.names(),
        "overrides": evaluation.routing_overrides(),
        "tasks": ["classify", "extract", "summarize", "ask"],
    }


class EvalPagesController(Controller):
    """The evaluation workbench pages."""

    include_in_schema = False
    path = "/admin/eval"
    opt = access(roles=("admin",))

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        evaluation: NamedDependency[Evaluation],
        engine: NamedDependency[Engine],
        registry: NamedDependency[Registry],
    ) -> Template:
        """Sets with upload, start a run, recent runs, routing in force."""
        context = await anyio.to_thread.run_sync(
            lambda: index_context(evaluation, engine, registry)
        )
        return render(request, "eval.html", **context, note=None)

    @post("/sets", status_code=200, request_max_body_size=UPLOAD_CEILING_BYTES)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        evaluation: NamedDependency[Evaluation],
        engine: NamedDependency[Engine],
    ) -> Template:
        """Upload a set (new set or new version); answers the sets panel."""
        body = await upload_set(evaluation, actor_for(request), data, mode="create")
        sets = await anyio.to_thread.run_sync(goldensets.list_sets, engine)
        note = f"Set {body['name']} is at version {body['version']} with {body['items']} items."
        return fragment("_eval_sets.html", sets=sets, note=note)

    @post("/samples", status_code=200)
    async def samples(
        self,
        request: Request[Any, Any, Any],
        evaluation: NamedDependency[Evaluation],
        engine: NamedDependency[Engine],
    ) -> Template:
        """Load the shipped sample sets (those not loaded yet)."""
        loaded = await load_samples(evaluation, actor_for(request))
        sets = await anyio.to_thread.run_sync(goldensets.list_sets, engine)
        note = f"Loaded {', '.join(loaded)}." if loaded else "The sample sets are already loaded."
        return fragment("_eval_sets.html", sets=sets, note=note)

    @post("/runs", status_code=200)
    async def start(
        self,
        request: Request[Any, Any, Any],
        evaluation: NamedDependency[Evaluation],
    ) -> Template:
        """Start a run and send the browser to its page."""
        data = await request.form()
        models = [str(m) for m in data.getall("models")] if "models" in data else []
        limit_raw = str(data.get("limit") or "").strip()
        try:
            limit = int(limit_raw) if limit_raw else None
        except ValueError:
            raise InvalidInput(
                "the number of items must be a whole number", field="limit"
            ) from None
        run = await evaluation.start(
            actor_for(request),
            set_name=str(data.get("set") or ""),
            models=models,
            limit=limit,
            judge=str(data.get("judge") or "") == "on",
        )
        return fragment(
            "_eval_started.html", run=run, headers={"HX-Redirect": f"/admin/eval/runs/{run['id']}"}
        )

    @get("/runs/{run_id:str}")
    async def run(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        evaluation: NamedDependency[Evaluation],
        bar: FromQuery[float] = DEFAULT_BAR,
    ) -> Template:
        """Progress (polled while running), charts, recommendation, calibration, Apply."""
        check_bar(bar)
        context = await anyio.to_thread.run_sync(lambda: run_context(evaluation, run_id, bar))
        return render(request, "eval_run.html", "_eval_report.html", **context, note=None)

    @get("/runs/{run_id:str}/progress")
    async def progress(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        evaluation: NamedDependency[Evaluation],
        bar: FromQuery[float] = DEFAULT_BAR,
    ) -> Template:
        """The progress panel; once the run is finished, the whole report (htmx polls it)."""
        check_bar(bar)
        context = await anyio.to_thread.run_sync(lambda: run_context(evaluation, run_id, bar))
        return fragment("_eval_report.html", **context, note=None)

    @post("/runs/{run_id:str}/apply", status_code=200)
    async def apply(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        data: URLEncodedBody[dict[str, Any]],
        evaluation: NamedDependency[Evaluation],
    ) -> Template:
        """Apply the recommendation for the bar (audited); answers the applied note."""
        try:
            bar = check_bar(float(str(data.get("bar", DEFAULT_BAR))))
        except ValueError:
            raise InvalidInput("the bar must be a number between 0 and 1", field="bar") from None
        applied = await evaluation.apply(actor_for(request), run_id, bar=bar)
        return fragment("_eval_applied.html", applied=applied)
