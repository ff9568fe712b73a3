"""What the appliance adds to one request with PII off, measured side by side in one run.

    python -m tests.bench.gateway_profile [--rounds 600] [--checkout NAME=PATH ...] [--py-spy BIN]

A backend that answers at once in the OpenAI wire format runs in its own process; each checkout
(this one by default; `--checkout main=/path/to/main` adds another) serves the appliance with
`appliance serve` in front of it, under a pass-through policy (no entity the detector knows, no
output scan), with an API key. Each round calls the backend directly, then each appliance, in a
shuffled order, with the same client and body (`/v1/chat/completions`, `max_tokens` 1); the
table gives the time each adds over the direct call (p50, p90, p99). With `--py-spy`, the last
checkout is sampled while it serves, and the functions where its request time goes are listed.

Not part of the suite: it starts servers and takes a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.bench.report import pct
from tests.support.ports import free_port, wait_ok

HERE = Path(__file__).resolve().parents[2]
BODY = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello in one word."}],
    "max_tokens": 1,
}
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }
).encode()
MODELS = json.dumps(
    {"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "bench"}]}
).encode()
PASSTHROUGH = """\
name: passthrough
description: Nothing detected, nothing changed (the gateway's own cost).
entities:
  - {entity: NOTHING_AT_ALL, action: allow}
output: {scan: false}
"""


# -- the instant backend -------------------------------------------------------------------------
class _Instant(asyncio.Protocol):
    """HTTP/1.1 keep-alive; answers every POST with the completion and every GET with the models."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            payload = ANSWER if head.startswith(b"POST") else MODELS
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )


def serve_instant(port: int) -> None:
    """Run the instant backend until killed."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Instant, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the appliances ------------------------------------------------------------------------------
class Appliance:
    """`appliance serve` from one checkout, with its own data directory and an API key."""

    def __init__(
        self,
        name: str,
        checkout: Path,
        backend_url: str,
        root: Path,
        *,
        stages: Path | None = None,
        policy: str = "passthrough",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = root / name
        policies = data / "policies"
        policies.mkdir(parents=True)
        for shipped in (checkout / "policies").glob("*.yaml"):
            (policies / shipped.name).write_text(shipped.read_text())
        (policies / "passthrough.yaml").write_text(PASSTHROUGH)
        (data / "models").mkdir()
        inference = data / "inference.toml"
        inference.write_text(
            f'[[backends]]\nname = "instant"\nkind = "openai_compat"\n\n'
            f'[[backends.nodes]]\nurl = "{backend_url}"\n\n'
            '[[backends.models]]\nname = "bench-model"\n'
        )
        self.env = os.environ | {
            "PYTHONPATH": str(checkout),
            "APPLIANCE_DATA_DIR": str(data),
            "APPLIANCE_POLICIES_DIR": str(policies),
            "APPLIANCE_MODELS_DIR": str(data / "models"),
            "APPLIANCE_INFERENCE_FILE": str(inference),
            "APPLIANCE_DEFAULT_POLICY": policy,
            "APPLIANCE_DEFAULT_MODEL": "bench-model",
            "APPLIANCE_INFERENCE_RATE_PER_MINUTE": "1000000",
            "APPLIANCE_LOG_LEVEL": "WARNING",
        }
        self.cli = [sys.executable, "-m", "appliance"]
        subprocess.run(
            [*self.cli, "db", "upgrade"],
            cwd=checkout,
            env=self.env,
            check=True,
            capture_output=True,
        )
        made = subprocess.run(
            [*self.cli, "keys", "create", "--name", "bench", "--scopes", "chat"],
            cwd=checkout,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.key = made.stdout.strip().splitlines()[-1]
        serve = [*self.cli, "serve", "--port", str(self.port)]
        if stages is not None:
            # The stage timer of this checkout (tests/bench/gateway_stages.py) wraps the path.
            serve[1:3] = [str(Path(__file__).with_name("gateway_stages.py"))]
            self.env["GATEWAY_STAGES_OUT"] = str(stages)
        self.log = data / "serve.log"
        with self.log.open("wb") as log:
            # In the checkout: `python -m` puts the working directory first on the path.
            self.process = subprocess.Popen(
                serve, cwd=checkout, env=self.env, stdout=log, stderr=log
            )
        try:
            wait_ok(f"{self.url}/readyz", timeout=180, process=self.process, name=name)
        except RuntimeError:
            self.stop()
            print(self.log.read_text()[-3000:], file=sys.stderr)
            raise

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--py-spy", metavar="BIN", help="sample the last checkout with py-spy")
    parser.add_argument("--spy-out", default="gateway-spy.txt", help="py-spy's raw samples")
    parser.add_argument(
        "--stages", action="store_true", help="time the path's stages in each checkout"
    )
    parser.add_argument(
        "--pii",
        action="store_true",
        help="the shipped `default` policy and the peer benchmark's 1 KB prompt with 8 "
        "identifiers, instead of a pass-through policy and a short prompt",
    )
    args = parser.parse_args()
    if args.pii:
        from tests.bench.peer import LONG

        BODY["messages"] = [{"role": "user", "content": LONG}]
    checkouts = [tuple(c.split("=", 1)) for c in args.checkout] or [("this", str(HERE))]

    backend_port = free_port()
    backend = subprocess.Popen(
        [sys.executable, "-c", f"from tests.bench.gateway_profile import serve_instant; "
         f"serve_instant({backend_port})"],
        cwd=HERE,
        env=os.environ | {"PYTHONPATH": str(HERE)},
    )  # fmt: skip
    backend_url = f"http://127.0.0.1:{backend_port}/v1"
    apps: list[Appliance] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        wait_ok(f"{backend_url}/models", timeout=20, process=backend, name="the backend")
        with tempfile.TemporaryDirectory(prefix="gwprof-") as root:
            try:
                for name, path in checkouts:
                    stages = Path(root) / f"stages-{name}.json" if args.stages else None
                    apps.append(
                        Appliance(
                            name,
                            Path(path),
                            backend_url,
                            Path(root),
                            stages=stages,
                            policy="default" if args.pii else "passthrough",
                        )
                    )
                clients = {"direct": httpx.Client(base_url=backend_url, timeout=30)} | {
                    app.name: httpx.Client(
                        base_url=f"{app.url}/v1",
                        timeout=30,
                        headers={"Authorization": f"Bearer {app.key}"},
                    )
                    for app in apps
                }
                times: dict[str, list[float]] = {name: [] for name in clients}
                order = list(clients)
                for round_ in range(args.warmup + args.rounds):
                    if args.py_spy and round_ == args.warmup:
                        out = Path(args.spy_out)
                        spy = subprocess.Popen(
                            [args.py_spy, "record", "--pid", str(apps[-1].process.pid),
                             "--threads", "--rate", "2000", "--format", "raw",
                             "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                        time.sleep(1.0)
                    random.shuffle(order)
                    for name in order:
                        started = time.perf_counter()
                        response = clients[name].post("/chat/completions", json=BODY)
                        elapsed = (time.perf_counter() - started) * 1000
                        if response.status_code != 200:
                            raise RuntimeError(
                                f"{name}: {response.status_code} {response.text[:300]}"
                            )
                        if round_ >= args.warmup:
                            times[name].append(elapsed)
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=30)
                    print_spy(Path(args.spy_out))
            finally:
                for app in apps:
                    app.stop()
            if args.stages:
                print_stages(Path(root), [app.name for app in apps], args.warmup)
    finally:
        for app in apps:
            if app.process.poll() is None:
                app.stop()
        backend.terminate()
        backend.wait(timeout=10)
    direct = times["direct"]
    print(f"\n{args.rounds} interleaved rounds, {os.cpu_count()} CPUs")
    print("| arm | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 |")
    print("|---|---|---|---|---|---|---|")
    for name, values in times.items():
        added = [v - d for v, d in zip(values, direct, strict=True)]
        print(
            f"| {name} | {pct(values, 0.5):.2f} | {pct(values, 0.9):.2f} | {pct(values, 0.99):.2f}"
            f" | {pct(added, 0.5):.2f} | {pct(added, 0.9):.2f} | {pct(added, 0.99):.2f} |"
            if name != "direct"
            else f"| direct | {pct(values, 0.5):.2f} | {pct(values, 0.9):.2f} "
            f"| {pct(values, 0.99):.2f} | | | |"
        )
    means = {n: statistics.mean(v) - statistics.mean(direct) for n, v in times.items()}
    print("mean added: " + ", ".join(f"{n} {m:.2f}" for n, m in means.items() if n != "direct"))
    return 0


def print_stages(root: Path, names: list[str], warmup: int) -> None:
    """Median and mean ms per stage per checkout (warm-up requests left out)."""
    stages = {name: json.loads((root / f"stages-{name}.json").read_text()) for name in names}
    print("\n| stage | " + " | ".join(f"{n} p50 | {n} mean" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for stage in next(iter(stages.values())):
        cells = []
        for name in names:
            values = stages[name].get(stage, [])[warmup:]
            cells += (
                [f"{statistics.median(values):.2f}", f"{statistics.mean(values):.2f}"]
                if values
                else ["-", "-"]
            )
        print(f"| {stage} | " + " | ".join(cells) + " |")


def print_spy(path: Path, top: int = 40) -> None:
    """Samples per function, idle excluded: inclusive for the appliance's own functions, and
    by the library function nearest the leaf (self time grouped by module)."""
    inclusive: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(i in frames[-1] for i in ("select (selectors", "wait (threading", "get (queue")):
            continue
        n = int(count)
        total += n
        for frame in {f for f in frames if "appliance/" in f}:
            name = re.sub(r":\d+\)", ")", frame)
            inclusive[name] = inclusive.get(name, 0) + n
        leaf = re.sub(r" \((.*?)(?:/__init__)?\.py:\d+\)", r" (\1)", frames[-1])
        leaves[leaf] = leaves.get(leaf, 0) + n
    print(f"\npy-spy: {total} busy samples; the appliance's functions, inclusive:")
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * count / total:5.1f}%  {frame[:140]}")
    print("\nleaf functions (self time):")
    for frame, count in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * count / total:5.1f}%  {frame[:140]}")


if __name__ == "__main__":
    sys.exit(main())
