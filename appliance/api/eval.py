"""`/api/v1/eval`: golden sets, evaluation runs, reports, and applying a recommendation.

Admins (browser) and keys with the `admin` scope only. Sets and runs are read back as metadata
and metrics; golden content and model outputs stay sealed and are never returned.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, JSONBody
from sqlalchemy import Engine

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import InvalidInput
from appliance.eval import goldensets
from appliance.eval.runs import public_run
from appliance.eval.service import DEFAULT_BAR, Evaluation, check_bar
from appliance.eval.upload import UPLOAD_CEILING_BYTES, upload_set

ADMIN = access(roles=("admin",), scopes=("admin",))
MAX_NUMBER = 1_000_000


def _models(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [m for m in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise InvalidInput("`models` must be a list of model names", field="models")
    return [m.strip() for m in value if m.strip()]


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"`{name}` must be a whole number", field=name)
    try:
        number = int(value)
    except (ValueError, RecursionError):
        raise InvalidInput(f"`{name}` must be a whole number", field=name) from None
    if not 1 <= number <= MAX_NUMBER:
        raise InvalidInput(f"`{name}` must be between 1 and {MAX_NUMBER}", field=name)
    return number


class EvalController(Controller):
    """Golden sets, runs and recommendations."""

    path = "/api/v1/eval"
    tags = ["evaluation"]

    @get("/sets", summary="List golden sets", opt=ADMIN, sync_to_thread=True)
    def sets(self, engine: NamedDependency[Engine]) -> list[dict[str, Any]]:
        """Every set with its latest version and item count (no content)."""
        return goldensets.list_sets(engine)

    @post(
        "/sets",
        summary="Create a golden set from a JSONL or CSV file",
        description=(
            "Multipart form: `file` (JSONL objects or CSV with a header: `input`, `expected`, "
            "optional `id`, and `question` for ask sets), `name`, `task` (classify, extract, "
            "summarize, ask), optional `policy`, `params` (JSON object: labels, schema, question, "
            "max_words), `description`, `format`, `mode` (create, the default; replace or "
            "append make a new version of an existing set). A bad row refuses the whole file "
            "with 422 naming the row and the field."
        ),
        status_code=201,
        request_max_body_size=UPLOAD_CEILING_BYTES,
        opt=ADMIN,
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        evaluation: NamedDependency[Evaluation],
    ) -> dict[str, Any]:
        """Validate, seal and store the set (a new version), audited."""
        return await upload_set(evaluation, actor_for(request), data, mode="create")

    @get(
        "/sets/{name:str}",
        summary="One golden set and its versions",
        opt=ADMIN,
        sync_to_thread=True,
    )
    def set_detail(
        self, name: FromPath[str], evaluation: NamedDependency[Evaluation]
    ) -> dict[str, Any]:
        """The set's metadata and every version (no content)."""
        return evaluation.set_info(name)

    @post(
        "/sets/{name:str}/items",
        summary="Append items to a golden set as a new version",
        description='JSON body `{"items": [{"input": ..., "expected": ...}]}`.',
        status_code=201,
        opt=ADMIN,
    )
    async def append(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        data: JSONBody[dict[str, Any]],
        evaluation: NamedDependency[Evaluation],
    ) -> dict[str, Any]:
        """A new version: the latest items plus these."""
        items = data.get("items")
        if not isinstance(items, list) or not items:
            raise InvalidInput("`items` must be a non-empty list", field="items")
        lines = []
        for number, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise InvalidInput(f"item {number}: expected an object", field=f"item {number}")
            lines.append(json.dumps(item))
        return await evaluation.upload(
            actor_for(request),
            name=name,
            data="\n".join(lines).encode(),
            fmt="jsonl",
            mode="append",
        )

    @post(
        "/runs",
        summary="Start an evaluation run",
        description=(
            "JSON body: `set` (name), `models` (list of registered model names), optional "
            "`version` (default: the latest), `limit` (first N items), `judge` (summarize/ask: "
            "the strongest allowed model rates each answer). Answers 202 with the run."
        ),
        status_code=202,
        opt=ADMIN,
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[dict[str, Any]],
        evaluation: NamedDependency[Evaluation],
    ) -> dict[str, Any]:
        """Create the run; the runner works through it in the background."""
        set_name = data.get("set")
        if not isinstance(set_name, str) or not set_name:
            raise InvalidInput("name the golden set in `set`", field="set")
        judge = data.get("judge", False)
        if not isinstance(judge, bool):
            raise InvalidInput("`judge` must be true or false", field="judge")
        return await evaluation.start(
            actor_for(request),
            set_name=set_name,
            models=_models(data.get("models")),
            version=_int(data.get("version"), "version"),
            limit=_int(data.get("limit"), "limit"),
            judge=judge,
        )

    @get("/runs", summary="List evaluation runs", opt=ADMIN, sync_to_thread=True)
    def runs(self, evaluation: NamedDependency[Evaluation]) -> list[dict[str, Any]]:
        """The newest runs first, with their metrics (no content)."""
        return [public_run(r) for r in evaluation.runs.list_runs()]

    @get(
        "/runs/{run_id:str}",
        summary="One run: progress, metrics, recommendation, calibration",
        opt=ADMIN,
        sync_to_thread=True,
    )
    def run(
        self,
        run_id: FromPath[str],
        evaluation: NamedDependency[Evaluation],
        bar: FromQuery[float] = DEFAULT_BAR,
    ) -> dict[str, Any]:
        """The report for a quality bar in 0..1 (`bar`, default 0.8)."""
        return evaluation.report(run_id, bar=check_bar(bar))

    @post(
        "/runs/{run_id:str}/apply",
        summary="Apply a run's recommendation to routing",
        description=(
            "JSON body: `bar` (0..1), `model` and `threshold` (booleans, both true by default). "
            "The task's default model and, for a classification, the calibrated confidence "
            "threshold take effect for the next request; audited `eval.applied`."
        ),
        status_code=200,
        opt=ADMIN,
    )
    async def apply(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
        evaluation: NamedDependency[Evaluation],
    ) -> dict[str, Any]:
        """One action: routing changes now."""
        bar = data.get("bar", DEFAULT_BAR)
        if isinstance(bar, bool) or not isinstance(bar, int | float):
            raise InvalidInput("`bar` must be a number between 0 and 1", field="bar")
        flags = {k: data.get(k, True) for k in ("model", "threshold")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise InvalidInput(f"`{key}` must be true or false", field=key)
        return await evaluation.apply(
            actor_for(request),
            run_id,
            bar=check_bar(float(bar)),
            model=flags["model"],
            threshold=flags["threshold"],
        )

    @get("/routing", summary="Routing overrides in force", opt=ADMIN, sync_to_thread=True)
    def routing(self, evaluation: NamedDependency[Evaluation]) -> list[dict[str, Any]]:
        """The default model and threshold per task applied from evaluations."""
        return evaluation.routing_overrides()
