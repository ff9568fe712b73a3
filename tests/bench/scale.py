"""`make bench-scale`: requests/s of 1, 2 and 3 app replicas behind nginx with PII on, measured
in one run; written to tests/bench/SCALE.md.

The deployment's shape on one machine: `appliance serve` replicas on one throwaway PostgreSQL
(tests/support/replicas.py), Debian's nginx in front of them on a loopback port with a
`least_conn` upstream (a config written for the run, modelled on the reverse_proxy role's, without
TLS), and load from Debian's `wrk` in its own process: fixed connections, a warm-up, then a
measured run per configuration. Every request is the peer benchmark's 1 KB prompt with 8 planted
identifiers under the shipped `default` policy, `max_tokens` 1.

The main table's backend is tests/bench/gateway_profile.py's instant backend (a small asyncio
server that answers every completion at once in the OpenAI wire format, named as such in
SCALE.md), so the gateway is what is measured. One row per replica count then puts a real
llama.cpp server (SmolLM2-135M, one thread) behind the same path to show where the model takes
over: with `max_tokens` 1 it still evaluates the whole prompt on every request. The prompt carries
a per-request number (the HR file number), so no request finds its prompt in the engine's cache.

Every configuration runs twice, in the order 1, 2, 3 then 3, 2, 1, so that drift in what else the
shared machine runs lands on both ends. Any failed request (a status other than 200, a timeout, a
connection error) stops the run before SCALE.md is written: a benchmark that counts 429s measures
the rate limiter, so the limits are raised for it. Prompts and answers are never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from appliance.config import PROJECT_ROOT, Settings
from appliance.inference.bundled import install_bundled
from tests.bench.peer import (
    ENGINE_THREADS,
    LONG,
    MODELS,
    cpu_model,
    cpu_seconds,
    openai_backend,
)
from tests.bench.report import versions
from tests.support.llama_server import LlamaServer
from tests.support.ports import free_port, wait_ok
from tests.support.postgres import HOW_TO_ENABLE, PostgresServer, find_bin_dir
from tests.support.replicas import Replicas, replica_env

OUT = PROJECT_ROOT / "tests" / "bench" / "SCALE.md"
COUNTS = (1, 2, 3)
CONNECTIONS = int(os.environ.get("SCALE_CONNECTIONS", "16"))
WARMUP_S = int(os.environ.get("SCALE_WARMUP_S", "5"))
SECONDS = int(os.environ.get("SCALE_SECONDS", "15"))
"""Measured seconds per configuration and pass with the instant backend."""
PASSES = int(os.environ.get("SCALE_PASSES", "3"))
"""Passes over the replica counts with the instant backend, in alternating order; the report
takes the median pass, so one pass disturbed by the shared machine's other work does not
decide the ratio."""
LLAMA_SECONDS = int(os.environ.get("SCALE_LLAMA_SECONDS", "30"))
"""Measured seconds per replica count with the llama.cpp server (one pass)."""
LLAMA_CONNECTIONS = int(os.environ.get("SCALE_LLAMA_CONNECTIONS", "4"))
"""Enough to keep the llama.cpp server's one slot busy behind three replicas (one slot each);
more would only lengthen the queue, and the backlog a run leaves behind when it stops."""
RATE = "1000000"
"""Per-minute limits for the run: far above what it sends, so no request is refused by them."""
DETECTOR_TIMEOUT_S = "120"
"""The detector's timeout counts the wait behind the requests queued for the detector
processes; with a fixed number in flight on a shared machine, the production 10 s would make the
run measure the timeout and the other work on the machine rather than the throughput."""
INSTANT, LLAMA = "bench-instant", "bench-llama"
IDLE = "idle replicas"
FILE_NUMBER = "2291"
"""The HR file number in the prompt; each request replaces it with its own counter."""


# -- the backends ----------------------------------------------------------------------------------
@contextlib.contextmanager
def instant_backend() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """tests/bench/gateway_profile.py's instant backend in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c",
         f"from tests.bench.gateway_profile import serve_instant; serve_instant({port})"],
        cwd=PROJECT_ROOT,
        env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ok(url + "/models", timeout=20, process=process, name="the instant backend")
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def inference_file(path: Path, instant_url: str, llama_url: str) -> Path:
    """Both backends, each a pool of one node; the llama.cpp server serves one request at a
    time, so its node has one slot (requests queue in the appliance, as they would)."""
    path.write_text(
        openai_backend(
            "instant",
            instant_url,
            max_concurrency=CONNECTIONS,
            model=INSTANT,
            served_as="bench-model",
        )
        + openai_backend(
            "llama", llama_url, max_concurrency=1, model=LLAMA, served_as="smollm2-135m"
        )
    )
    return path


# -- nginx ---------------------------------------------------------------------------------------
NGINX_CONF = """\
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream appliance {{
        least_conn;
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 10m;
        location / {{
            proxy_pass http://appliance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(root: Path, upstreams: list[str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Debian's nginx on a free loopback port, `least_conn` over `upstreams` (host:port)."""
    root.mkdir(parents=True)
    port = free_port()
    servers = "\n".join(f"        server {u};" for u in upstreams)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, servers=servers, port=port))
    process = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(root / "stderr.log").open("wb"),
    )
    try:
        wait_ok(f"http://127.0.0.1:{port}/healthz", timeout=20, process=process, name="nginx")
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"


# -- the load ------------------------------------------------------------------------------------
WRK_SCRIPT = """\
local counter = {start}
local head = [==[{head}]==]
local tail = [==[{tail}]==]
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, head .. counter .. tail)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'SCALE {{"requests": %.0f, "duration_us": %.0f, "connect": %.0f, "read": %.0f, '
        .. '"write": %.0f, "status": %.0f, "timeout": %.0f, "p50_us": %.0f, "p95_us": %.0f, '
        .. '"p99_us": %.0f}}\\n',
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def body(model: str, number: int | str) -> dict[str, object]:
    """The request: the 1 KB prompt with its file number replaced by `number`."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": LONG.replace(FILE_NUMBER, str(number), 1)}],
        "max_tokens": 1,
    }


def wrk_script(path: Path, *, model: str, key: str, start: int) -> Path:
    """A Lua script for wrk: the JSON body split where the file number goes, which each request
    fills from a counter; `done` prints the summary as one JSON line."""
    head, tail = json.dumps(body(model, "\x00")).split("\\u0000")
    path.write_text(WRK_SCRIPT.format(start=start, head=head, tail=tail, key=key))
    return path


@dataclass
class Load:
    """One wrk run: what it reports, and its own CPU seconds."""

    requests: int
    seconds: float
    errors: dict[str, int]
    p50: float
    p95: float
    p99: float
    cpu: float

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> Load:
    """`wrk` with one thread and `connections` for `seconds`; its CPU from wait4."""
    out = script.with_suffix(".out")
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "300s",
             "-s", str(script), url],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    line = next((x for x in text.splitlines() if x.startswith("SCALE ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {text[-1500:]}")
    found = json.loads(line.removeprefix("SCALE "))
    return Load(
        requests=int(found["requests"]),
        seconds=found["duration_us"] / 1e6,
        errors={k: int(found[k]) for k in ("connect", "read", "write", "status", "timeout")},
        p50=found["p50_us"] / 1000,
        p95=found["p95_us"] / 1000,
        p99=found["p99_us"] / 1000,
        cpu=usage.ru_utime + usage.ru_stime,
    )


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8])  # guest time is already inside user and nice
    idle = fields[3] + fields[4]
    return (total - idle) / tick, total / tick


def own_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), its children left out."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(roots: list[int], *, timeout: float = 300) -> None:
    """Until the processes under `roots` are idle (under 5% of a core over half a second):
    requests in flight when wrk stopped are still being answered."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(roots)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(roots)
        if now - before < 0.025:
            return
        before = now
    raise RuntimeError(f"the servers were still busy {timeout:.0f} s after the load stopped")


# -- one configuration ---------------------------------------------------------------------------
@dataclass
class Run:
    """One measured configuration."""

    backend: str
    replicas: int
    pass_: int
    connections: int
    load: Load
    wall: float
    machine_busy: float
    """CPU seconds the whole machine spent busy during the run (every process, ours or not)."""
    cpu: dict[str, float]
    """CPU seconds per part: app replicas (each, with its detector processes), nginx,
    PostgreSQL, backend."""
    web: list[float]
    """CPU seconds of each replica's web process alone (its detector processes left out)."""
    receipt: dict[str, int]
    prompt_tokens: int
    """The prompt tokens the backend reported for the check request."""

    @property
    def rps(self) -> float:
        return self.load.requests / self.load.seconds


@dataclass
class Stack:
    """Everything that stays up for the whole run."""

    tmp: Path
    replicas: Replicas
    key: str
    postgres: int
    backends: dict[str, int]
    counter: int = 0


def receipt_entities(response: httpx.Response) -> dict[str, int]:
    """The entity counts of the privacy receipt (types and counts only, no values)."""
    if response.status_code != 200:
        try:
            error = response.json().get("error") or {}
            code = error.get("code") if isinstance(error, dict) else None
        except ValueError:
            code = None
        raise RuntimeError(f"check request: HTTP {response.status_code} ({code})")
    receipt = json.loads(response.headers["X-Privacy-Receipt"])
    return {str(k): int(v) for k, v in (receipt.get("entities") or {}).items()}


def measure(
    stack: Stack,
    backend: str,
    count: int,
    label: str,
    *,
    seconds: int,
    warmup: int,
    pass_: int = 1,
) -> Run:
    """nginx over the first `count` replicas; a check request, `warmup` seconds of load (none
    if 0), then `seconds` of load measured."""
    model, connections = (
        (INSTANT, CONNECTIONS) if backend == "instant" else (LLAMA, LLAMA_CONNECTIONS)
    )
    upstreams = [url.removeprefix("http://") for url in stack.replicas.urls[:count]]
    apps = [p.pid for p in stack.replicas.processes[:count] if p is not None]
    parts = {f"app {i + 1}": [pid] for i, pid in enumerate(apps)}
    parts |= {"PostgreSQL": [stack.postgres], "backend": [stack.backends[backend]]}
    # The replicas left out of this configuration still run their background work; counted
    # apart so that it is neither the path's CPU nor the machine's other work.
    parts[IDLE] = [p.pid for p in stack.replicas.processes[count:] if p is not None]
    with nginx(stack.tmp / f"nginx-{label}", upstreams) as (url, proxy):
        parts["nginx"] = [proxy.pid]
        stack.counter += 1_000_000
        check = httpx.post(
            f"{url}/v1/chat/completions",
            json=body(model, stack.counter),
            headers={"Authorization": f"Bearer {stack.key}"},
            timeout=300,
        )
        receipt = receipt_entities(check)
        script = wrk_script(
            stack.tmp / f"{label}.lua", model=model, key=stack.key, start=stack.counter
        )
        everything = [pid for pids in parts.values() for pid in pids]
        if warmup:
            run_wrk(url, script, warmup, connections)
            settle(everything)
        stack.counter += 1_000_000
        script = wrk_script(
            stack.tmp / f"{label}.lua", model=model, key=stack.key, start=stack.counter
        )
        cpu_before = {name: cpu_seconds(pids) for name, pids in parts.items()}
        web_before = [own_cpu(pid) for pid in apps]
        busy_before, _ = machine_cpu()
        started = time.monotonic()
        load = run_wrk(url, script, seconds, connections)
        wall = time.monotonic() - started
        busy_after, _ = machine_cpu()
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in parts.items()}
        web = [own_cpu(pid) - before for pid, before in zip(apps, web_before, strict=True)]
        settle(everything)
    tokens = int(check.json()["usage"]["prompt_tokens"])
    run = Run(
        backend,
        count,
        pass_,
        connections,
        load,
        wall,
        busy_after - busy_before,
        cpu,
        web,
        receipt,
        tokens,
    )
    print(
        f"{label}: {run.rps:.1f} requests/s, p50 {load.p50:.1f} ms, p95 {load.p95:.1f} ms, "
        f"{load.failed} failed, wrk {100 * load.cpu / wall:.0f}% of a core",
        flush=True,
    )
    if load.failed:
        raise SystemExit(
            f"{label}: {load.failed} failed requests ({load.errors}); the replicas answered "
            f"{refusals(stack.replicas)}; not written"
        )
    return run


def refusals(replicas: Replicas) -> dict[str, int]:
    """Statuses other than 200 in the replicas' request log lines, and error messages, counted
    (the log holds paths, statuses and error types, never request text)."""
    found: dict[str, int] = {}
    for i in range(replicas.count):
        path = replicas.log(i)
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("message") == "request" and entry.get("status") != 200:
                    name = f"{entry.get('path')} {entry.get('status')}"
                elif entry.get("level") in ("ERROR", "CRITICAL"):
                    name = f"error: {entry.get('message')}"
                else:
                    continue
                found[name] = found.get(name, 0) + 1
    return found


@contextlib.contextmanager
def stack(tmp: Path) -> Iterator[Stack]:
    """PostgreSQL, both backends and three replicas on one database, one API key."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit(HOW_TO_ENABLE)
    for tool in (NGINX, WRK):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} not found: `make bench-scale` installs nginx and wrk")
    gguf = next(p for _, p, _ in install_bundled(MODELS) if p.name.startswith("SmolLM2"))
    postgres = PostgresServer.start(bin_dir)
    try:
        postmaster = int((postgres.root / "data" / "postmaster.pid").read_text().split()[0])
        with (
            instant_backend() as (instant_url, instant),
            LlamaServer(
                gguf, alias="smollm2-135m", threads=ENGINE_THREADS, batch_threads=ENGINE_THREADS
            ) as llama,
        ):
            root = tmp / "replicas"
            root.mkdir()
            (tmp / "no-models").mkdir()
            env = replica_env(
                root,
                tmp / "no-models",
                postgres.create_database(),
                inference_file=str(inference_file(tmp / "inference.toml", instant_url,
                                                  llama.base_url)),
                default_model=INSTANT,
                max_tokens="1",
                # Every replica runs for the whole run, as the app hosts of a deployment do.
                app_replicas=str(len(COUNTS)),
                detector_timeout_s=DETECTOR_TIMEOUT_S,
                inference_rate_per_minute=RATE,
                auth_failures_per_minute=RATE,
                login_rate_per_minute=RATE,
            )  # fmt: skip
            with Replicas(root, env, len(COUNTS)) as replicas:
                replicas.setup()
                key = replicas.key("chat", name="bench-scale")
                print(f"starting {replicas.count} replicas", flush=True)
                replicas.start_all()
                yield Stack(
                    tmp, replicas, key, postmaster, {"instant": instant.pid, "llama.cpp": llama.pid}
                )
    finally:
        postgres.stop()


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    started = time.monotonic()
    when = datetime.now(UTC)
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name, stack(Path(name)) as up:
        instant: list[Run] = []
        for pass_ in range(1, PASSES + 1):
            for count in COUNTS if pass_ % 2 else COUNTS[::-1]:
                label = f"instant-{count}-pass{pass_}"
                instant.append(
                    measure(
                        up, "instant", count, label, seconds=SECONDS, warmup=WARMUP_S, pass_=pass_
                    )
                )
        # The path is warm from the runs above; a warm-up would only queue prompts the model
        # must get through before the measured run can start.
        llama = [
            measure(up, "llama.cpp", count, f"llama-{count}", seconds=LLAMA_SECONDS, warmup=0)
            for count in COUNTS
        ]
        loads.append(os.getloadavg())
    lines = report(
        when=when, elapsed=time.monotonic() - started, loads=loads, instant=instant, llama=llama
    )
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(OUT.read_text())


# -- the report ------------------------------------------------------------------------------------
def measured() -> str:
    """The versions of what the run measured, for the report."""
    programs = {"nginx": [NGINX, "-v"], "wrk": [WRK, "-v"], "Python": [sys.executable, "-V"]}
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        programs["PostgreSQL"] = [str(bin_dir / "postgres"), "--version"]
    return versions(programs=programs)


def per_request(run: Run, seconds: float) -> str:
    return f"{1000 * seconds / run.load.requests:.1f}"


def apps_cpu(run: Run) -> float:
    return sum(v for k, v in run.cpu.items() if k.startswith("app "))


def path_cpu(run: Run) -> float:
    """CPU seconds of the request path: the replicas in use, nginx, PostgreSQL, the backend,
    wrk."""
    return sum(v for k, v in run.cpu.items() if k != IDLE) + run.load.cpu


def other(run: Run) -> float:
    """CPU seconds the rest of the machine used during the run (idle replicas left out)."""
    return max(0.0, run.machine_busy - sum(run.cpu.values()) - run.load.cpu)


def free_cpus(run: Run) -> float:
    """The CPUs the machine's other work left to the run, on average."""
    return (os.cpu_count() or 1) - other(run) / run.wall


def slash(values: Iterable[float], digits: int = 1) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def report(
    *,
    when: datetime,
    elapsed: float,
    loads: list[tuple[float, float, float]],
    instant: list[Run],
    llama: list[Run],
) -> list[str]:
    cores = os.cpu_count() or 1
    detectors = Settings.model_fields["detector_processes"].get_default(call_default_factory=True)
    by_count = {
        n: sorted((r for r in instant if r.replicas == n), key=lambda r: r.pass_) for n in COUNTS
    }
    rps = {n: statistics.median(r.rps for r in runs) for n, runs in by_count.items()}
    per_cpu = {
        n: statistics.median(r.rps / free_cpus(r) for r in runs) for n, runs in by_count.items()
    }
    top = COUNTS[-1]
    # The least disturbed one-replica run: what one replica's requests cost the whole path;
    # with every core busy at that cost, the machine serves at most cores / cost requests/s,
    # whatever the number of replicas.
    quiet = max(by_count[1], key=free_cpus)
    cost = path_cpu(quiet) / quiet.load.requests
    ceiling = cores / cost
    same_pass = next(r for r in by_count[top] if r.pass_ == quiet.pass_)
    app_one, app_top = (
        apps_cpu(quiet) / quiet.load.requests,
        apps_cpu(same_pass) / same_pass.load.requests,
    )
    growth = app_top / app_one - 1
    alone = (
        f"one replica can already keep all {cores} CPUs busy"
        if detectors >= cores
        else f"one replica can keep up to {detectors + 1} of the {cores} CPUs busy"
    )
    wrk_share = max(r.load.cpu / r.wall for r in instant + llama)
    receipts = {json.dumps(r.receipt, sort_keys=True) for r in instant + llama}
    receipt = ", ".join(f"{k} {v}" for k, v in sorted(quiet.receipt.items()))
    others = statistics.mean(other(r) / r.wall for r in instant + llama)
    lines = [
        "# Requests/s of 1, 2 and 3 app replicas behind nginx, PII on",
        "",
        f"Written by `make bench-scale` on {when:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} "
        f"minutes. **{cores} CPUs** (`os.cpu_count()`; {cpu_model()}), load average "
        f"{' / '.join(f'{v:.2f}' for v in loads[0])} before and "
        f"{' / '.join(f'{v:.2f}' for v in loads[-1])} after (1 / 5 / 15 min). The machine is "
        f"shared: during the measured runs its other work kept {others:.2f} of the {cores} "
        f"CPUs busy on average (the *other work* columns below). Versions: {measured()}.",
        "",
        "Each request: the 1 KB prompt of the peer benchmark with 8 planted identifiers, under "
        "the shipped `default` policy, `max_tokens` 1, through nginx (`least_conn`) to "
        "`appliance serve` replicas on one PostgreSQL; the privacy receipt of a check request "
        f"in each configuration named {receipt}"
        f"{'' if len(receipts) == 1 else ' (the counts differed between configurations)'}. "
        f"Load: `wrk` in its own process, one thread, {CONNECTIONS} connections, {WARMUP_S} s "
        f"warm-up then {SECONDS} s per configuration and pass; **its own CPU was at most "
        f"{100 * wrk_share:.1f}% of one core**.",
        "",
        "## The gateway: replicas in front of an instant backend",
        "",
        "The backend is **an instant backend** (tests/bench/gateway_profile.py: an asyncio "
        "server answering every completion at once in the OpenAI wire format), so the time is "
        "the gateway's: detection, pseudonyms and their vault rows, the answer scan, the audit "
        f"and usage rows on PostgreSQL, HTTP twice. {len(by_count[1])} passes over 1, 2, 3 "
        "replicas, in alternating order (1, 2, 3 then 3, 2, 1 ...); each figure in bold is the "
        "median of the passes.",
        "",
        "| replicas | requests/s, pass by pass | requests/s | ratio to 1 replica | other "
        "work on the machine, CPUs, pass by pass | requests/s per CPU left to the run | ratio "
        "to 1 replica | p50 / p95 ms (median pass) | failed requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, runs in by_count.items():
        middle = sorted(runs, key=lambda r: r.rps)[len(runs) // 2]
        lines.append(
            f"| {n} | {slash(r.rps for r in runs)} | **{rps[n]:.1f}** | "
            f"**{rps[n] / rps[1]:.2f}** | {slash((other(r) / r.wall for r in runs), 2)} | "
            f"{per_cpu[n]:.1f} | **{per_cpu[n] / per_cpu[1]:.2f}** | "
            f"{middle.load.p50:.0f} / {middle.load.p95:.0f} | "
            f"{sum(r.load.failed for r in runs)} |"
        )
    dearer = (
        "more replicas barely change what a request costs, so on more cores the ceiling rises "
        "with the cores"
        if growth < 0.15
        else f"a request costs {100 * growth:.0f}% more with {top} replicas on these "
        f"{cores} CPUs ({top} web processes and {top * detectors} detector processes take "
        "turns on them), so added replicas on the same cores buy nothing; they pay off with "
        "cores of their own (an app host each, as the multi-node layout deploys them)"
    )
    lines += [
        "",
        f"**Ratio {rps[top] / rps[1]:.2f} at {top} replicas on {cores} CPUs** "
        f"({rps[2] / rps[1]:.2f} at 2; per CPU left to the run {per_cpu[top] / per_cpu[1]:.2f} "
        f"and {per_cpu[2] / per_cpu[1]:.2f}). The ratio is bounded by the cores, not by the "
        f"replica count. In its least disturbed run one replica served {quiet.rps:.1f} requests/s "
        f"(its web process busy {100 * quiet.web[0] / quiet.wall:.0f}% of one core) at "
        f"{1000 * cost:.1f} ms of CPU per request for the whole path (app "
        f"{1000 * app_one:.1f} of which the web process {per_request(quiet, quiet.web[0])}, "
        f"PostgreSQL {per_request(quiet, quiet.cpu['PostgreSQL'])}, nginx, backend and wrk "
        f"the rest); {cores} CPUs at that cost, with nothing else running, serve at most "
        f"{ceiling:.0f} requests/s. One replica already runs {detectors} detector processes "
        "(the production default, one per core up to 4) beside its web process, so "
        f"{alone}; more replicas add web processes, not CPU. In the same pass "
        f"the app's CPU per request was {1000 * app_one:.1f} ms with one replica and "
        f"{1000 * app_top:.1f} ms with {top}: {dearer}.",
        "",
        f"Latency includes the wait behind the other {CONNECTIONS - 1} connections. *Other "
        "work* is the whole machine's busy CPU (/proc/stat) minus every process of the run, "
        "averaged over the measured seconds; *per CPU left to the run* divides requests/s by "
        f"{cores} minus that, which evens out what the machine's other work took from a pass.",
        "",
    ]
    lines += llama_table(llama, ceiling)
    lines += cpu_table(instant + llama, cores)
    lines += method(detectors)
    return lines


def llama_table(runs: list[Run], ceiling: float) -> list[str]:
    first = runs[0].rps
    model = statistics.mean(r.cpu["backend"] / r.load.requests for r in runs)
    return [
        "## Where the model takes over: a real llama.cpp server",
        "",
        f"The same path with llama-cpp-python's server (SmolLM2-135M-Instruct Q4_1, "
        f"{ENGINE_THREADS} thread for generation and for prompt evaluation, one request at a "
        f"time) as the backend, one pass of {LLAMA_SECONDS} s per replica count with "
        f"{runs[0].connections} connections (enough to keep its one slot busy) and no warm-up "
        "beyond the check request (the path is warm from the runs above). With `max_tokens` 1 "
        f"it still evaluates the whole prompt ({runs[0].prompt_tokens} tokens with the chat "
        "template, never cached: each request's file number differs) on every request.",
        "",
        "| replicas | requests | requests/s | ratio to 1 replica | p50 ms | p95 ms | failed "
        "requests | llama.cpp CPU ms per request | other work on the machine, CPUs |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r.replicas} | {r.load.requests} | **{r.rps:.2f}** | {r.rps / first:.2f} | "
            f"{r.load.p50:.0f} | {r.load.p95:.0f} | {r.load.failed} | "
            f"{per_request(r, r.cpu['backend'])} | {other(r) / r.wall:.2f} |"
            for r in runs
        ),
        "",
        f"The model costs {model:.1f} s of CPU per request on its one thread, so it serves at "
        f"most {1 / model:.2f} requests/s whatever the replica count, against the gateway's "
        f"ceiling of about {ceiling:.0f} on this machine: with a real model behind it, the "
        "gateway is not what limits throughput, and more app replicas add nothing until there "
        "are more inference nodes (the differences between these rows are the machine's other "
        "work and the few requests a row completes).",
        "",
    ]


def cpu_table(runs: list[Run], cores: int) -> list[str]:
    lines = [
        "## CPU per request, every run",
        "",
        "User + system CPU of each part's process tree (/proc/PID/stat; reaped children "
        "included) over the measured seconds, per request; *other* is the whole machine's busy "
        "time (/proc/stat) minus all of these and the idle replicas' background work: the shared "
        "machine's other work. App split: "
        "each replica's share of the app CPU (how evenly `least_conn` spread the load). *App* is "
        "each replica's process tree (its web process and its detector processes); *of which "
        "web processes* leaves the detectors out.",
        "",
        "| run | requests/s | app | of which web processes | app split % | web processes, % "
        "of one core each | nginx | PostgreSQL | backend | wrk | other | wrk % of one core |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        app = apps_cpu(r)
        split = "/".join(f"{100 * v / app:.0f}" for k, v in r.cpu.items() if k.startswith("app "))
        name = (
            f"instant, {r.replicas}, pass {r.pass_}"
            if r.backend == "instant"
            else f"llama.cpp, {r.replicas}"
        )
        lines.append(
            f"| {name} | {r.rps:.1f} | {per_request(r, app)} | {per_request(r, sum(r.web))} | "
            f"{split} | {'/'.join(f'{100 * w / r.wall:.0f}' for w in r.web)} | "
            f"{per_request(r, r.cpu['nginx'])} | {per_request(r, r.cpu['PostgreSQL'])} | "
            f"{per_request(r, r.cpu['backend'])} | {per_request(r, r.load.cpu)} | "
            f"{per_request(r, other(r))} | "
            f"{100 * r.load.cpu / r.wall:.1f} |"
        )
    lines += ["", f"CPU columns in ms per request; {cores} CPUs.", ""]
    return lines


def method(detectors: int) -> list[str]:
    return [
        "## How it was measured",
        "",
        "- `python -m tests.bench.scale` (tests/bench/scale.py). One throwaway PostgreSQL "
        "(tests/support/postgres.py: `fsync` and `synchronous_commit` off, so the database's "
        "disk is not what is measured), one database, migrated once; three `appliance serve` "
        "replicas on it started once for the whole run (tests/support/replicas.py), each with "
        "its own data directory and the shared key files. A configuration of *n* replicas is "
        "nginx over the first *n*; the others stay up, idle.",
        "- Replica settings: production defaults (`detector_processes` "
        f"{detectors}, log level INFO, audit and usage rows committed per request) except the "
        f"per-minute limits (`inference_rate_per_minute`, `auth_failures_per_minute`, "
        f"`login_rate_per_minute` set to {int(RATE):,}) so that no request is refused by the "
        f"rate limiter, `detector_timeout_s` {DETECTOR_TIMEOUT_S} (production: 10; it counts "
        "the wait behind queued requests, which on a shared machine would make the run measure "
        f"the timeout), `max_tokens` 1, `app_replicas` {len(COUNTS)} (as a deployment of "
        f"{len(COUNTS)} app hosts sets it: each replica admits its share of a node's "
        "`max_concurrency`), and no embedded models (both backends are `openai_compat` pools "
        "of one node from the inference file).",
        "- nginx: Debian's package, a config written by the run after the reverse_proxy role's "
        "(`proxy_http_version 1.1`, upstream keep-alive 16, no buffering, access log off) with "
        "a `least_conn` upstream and `worker_processes auto`, plain HTTP on a loopback port "
        "(no TLS). A fresh nginx per configuration.",
        f"- Load: Debian's `wrk` with a Lua script that builds each POST body from a counter "
        f"(the prompt's file number), `-t1 -c{CONNECTIONS}` (`-c{LLAMA_CONNECTIONS}` for the "
        "llama.cpp rows); a check request through nginx first (its privacy receipt is quoted "
        f"above), then a {WARMUP_S} s warm-up (instant backend only), then the "
        "measured run; between runs the bench waits until every process on the path is idle. "
        "wrk's CPU is its own rusage (wait4). Requests/s is wrk's completed requests over its "
        "measured duration; p50 and p95 are wrk's latency percentiles (request sent to "
        "response read).",
        f"- Order: {PASSES} passes over 1, 2, 3 replicas with the instant backend, in "
        "alternating order, then 1, 2, 3 with the llama.cpp server; any failed request "
        "(non-200 status, timeout, connection error) stops the run before this file is "
        "written.",
        "- Prompts and answers are synthetic and never logged or printed; every process's "
        "output went to a temporary directory deleted after the run.",
        "",
    ]


if __name__ == "__main__":
    main()
