"""Soak test: a real `dllm serve` on loopback under a fixed-length mixed load, watched for lost
requests, 5xx, memory growth and leaked K/V pages.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py                  # 64 clients, 10 minutes
    PYTHONPATH=. .venv/bin/python benchmarks/soak.py --minutes 0.1 --clients 4 --warmup 2

It starts `dllm serve` itself (the shipped demo model, `--threads 1`, a free port on 127.0.0.1), runs
--warmup seconds of the same load, waits for the server to go idle and samples its resident memory
(VmRSS in /proc/PID/status), then runs --clients closed-loop clients for --minutes. Each client picks
its next request at random (seeded by --seed and its index):

- chat (60%): a demo task (`reverse abcde`, `sort 42 7 19`, `add 12 45`, `copy xyz` or a random one of
  the four), streamed or not, `cache` none / prefix / dual, some with `threshold` 0.9, some in blocks
  of 8. The answer is checked against the task's exact answer (reported, not judged: it is a model
  figure);
- disconnect (15%): a streamed chat request whose connection is closed after the first chunk;
- malformed (25%): bad JSON, an unknown field, max_tokens 0, a text/plain body, a lone surrogate
  (`"a\\ud800b"` as a raw JSON escape); each must get a 4xx.

Everything is bounded: a client starts no request after the deadline or beyond --max-requests, each
request has --request-timeout seconds, the whole load is cancelled --request-timeout + 30 s after the
deadline (what it cancels counts as lost), and the server gets SIGTERM at the end (SIGKILL after 60 s).
A request ends as exactly one of: completed (a full 200 answer, or the first chunk of a disconnect),
failed (an HTTP status it should not get, or an error event inside a stream; for malformed requests a
4xx is an expected failure), or error (no response: timeout, connection error). Lost = sent minus
those: must be 0.

After the load, the server must go idle: /metrics running and waiting 0 and K/V pages in use 0.
Exit status 1 if a request is lost, any unexpected 5xx, a client-side timeout or connection error,
the RSS after the run exceeds the RSS after warm-up by more than --max-rss-growth (10%), or K/V
pages are still in use. Prints a table and writes OUT/soak_cpu.{md,json} (--out, default benchmarks/scratch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_out import add_out_argument  # noqa: E402
from serving import pct  # noqa: E402

from models.demo_tasks import TASKS, answer_for, make_prompt  # noqa: E402

FIXED_PROMPTS = ("reverse abcde", "sort 42 7 19", "add 12 45", "copy xyz")
MALFORMED = ("bad_json", "unknown_field", "max_tokens_0", "wrong_content_type", "lone_surrogate")
GAUGES = (
    "dllm_num_requests_running",
    "dllm_num_requests_waiting",
    "dllm_kv_cache_pages_in_use",
    "dllm_kv_cache_pages_total",
)


# ----------------------------------------------------------------------------------------------
# The server


def start_server(model_dir: Path, log_path: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLLM_") and k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--model", str(model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--log-level", "warning", *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"unknown CPU, {os.cpu_count()} CPUs"


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {name: {labels: value}} (labels as written, "" when none)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        out.setdefault(name, {})[labels.rstrip("}")] = float(value)
    return out


async def scrape(client: httpx.AsyncClient) -> dict[str, dict[str, float]]:
    r = await client.get("/metrics", timeout=10)
    r.raise_for_status()
    return parse_metrics(r.text)


async def wait_idle(client: httpx.AsyncClient, seconds: float) -> tuple[dict, float]:
    """Scrape /metrics until nothing runs, waits or holds K/V pages (or `seconds` pass)."""
    start = time.monotonic()
    while True:
        m = await scrape(client)
        busy = sum(m.get(g, {}).get("", 0.0) for g in GAUGES[:3])
        if busy == 0 or time.monotonic() - start > seconds:
            return m, time.monotonic() - start
        await asyncio.sleep(0.5)


# ----------------------------------------------------------------------------------------------
# The load


class Tally:
    def __init__(self, max_requests: int):
        self.max_requests = max_requests
        self.sent = 0
        self.sent_by_kind: Counter = Counter()
        self.completed: Counter = Counter()  # kind -> n
        self.failed_expected: Counter = Counter()  # "kind status" -> n
        self.failed_unexpected: Counter = Counter()
        self.errors: Counter = Counter()  # "kind ExceptionName" -> n
        self.latency: list[float] = []  # completed chat requests, seconds
        self.wrong_answers = 0
        self.wrong_examples: list[dict] = []  # the first few: the request and the text it got
        self.examples: list[str] = []  # a few unexpected outcomes, for the report

    def note(self, what: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(what)

    def accounted(self) -> int:
        outcomes = (self.completed, self.failed_expected, self.failed_unexpected, self.errors)
        return sum(sum(c.values()) for c in outcomes)


def fives(tally: Tally) -> int:
    """Unexpected 5xx answers in a tally."""
    return sum(n for k, n in tally.failed_unexpected.items() if k.split()[-1].startswith("5"))


def chat_body(model: str, rng: random.Random) -> tuple[dict, str]:
    if rng.random() < 0.5:
        prompt = rng.choice(FIXED_PROMPTS)
    else:
        prompt = make_prompt(rng.choice(TASKS), rng)
    body: dict = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    cache = rng.choice(["none", "prefix", "dual"])
    if cache != "none":
        body["cache"] = cache
    if rng.random() < 0.3:
        body["threshold"] = 0.9
    if rng.random() < 0.3:
        body["block_length"] = 8
    return body, answer_for(prompt)


def read_sse(line: str) -> dict | None:
    """The JSON of one `data:` line (None for [DONE] and non-data lines)."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    return json.loads(line[6:])


async def send_chat(client: httpx.AsyncClient, body: dict, stream: bool) -> tuple[int, str, str | None]:
    """(status, answer text, error) of one chat request; the error names a protocol failure."""
    if not stream:
        r = await client.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            return r.status_code, "", r.text[:200]
        choice = r.json()["choices"][0]
        return 200, choice["message"]["content"], None if choice["finish_reason"] else "no finish_reason"
    text, finish, done = "", None, False
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            return r.status_code, "", (await r.aread()).decode(errors="replace")[:200]
        async for line in r.aiter_lines():
            done = done or line == "data: [DONE]"
            chunk = read_sse(line)
            if chunk is None:
                continue
            if "error" in chunk:
                return 200, text, f"error event: {chunk['error']}"
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
    if not done or finish is None:
        return 200, text, f"stream ended without [DONE] or finish_reason (done={done}, finish={finish})"
    return 200, text, None


async def send_disconnect(client: httpx.AsyncClient, body: dict) -> tuple[int, str | None]:
    """A streamed request closed after its first chunk (leaving the block closes the connection)."""
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            return r.status_code, (await r.aread()).decode(errors="replace")[:200]
        async for line in r.aiter_lines():
            chunk = read_sse(line)
            if chunk is not None:
                return 200, f"error event: {chunk['error']}" if "error" in chunk else None
    return 200, "stream ended before its first chunk"


async def send_malformed(client: httpx.AsyncClient, model: str, which: str) -> httpx.Response:
    json_type = {"Content-Type": "application/json"}
    good = {"model": model, "messages": [{"role": "user", "content": "add 1 2"}]}
    if which == "bad_json":
        truncated = b'{"model": "x", "messages": ['
        return await client.post("/v1/chat/completions", content=truncated, headers=json_type)
    if which == "unknown_field":
        return await client.post("/v1/chat/completions", json={**good, "frobnicate": 1})
    if which == "max_tokens_0":
        return await client.post("/v1/chat/completions", json={**good, "max_tokens": 0})
    if which == "wrong_content_type":
        return await client.post(
            "/v1/chat/completions", content=json.dumps(good).encode(), headers={"Content-Type": "text/plain"}
        )
    # The six characters \ud800 go on the wire as written: a lone surrogate, which is not Unicode.
    raw = json.dumps(model).join(['{"model": ', ', "messages": [{"role": "user", "content": "a\\ud800b"}]}'])
    return await client.post("/v1/chat/completions", content=raw.encode(), headers=json_type)


async def one_request(client: httpx.AsyncClient, model: str, rng: random.Random, tally: Tally) -> None:
    roll = rng.random()
    kind = "chat" if roll < 0.6 else "disconnect" if roll < 0.75 else "malformed"
    body, answer = chat_body(model, rng)
    stream = rng.random() < 0.5
    which = rng.choice(MALFORMED)
    label = f"malformed:{which}" if kind == "malformed" else kind
    tally.sent += 1
    tally.sent_by_kind[label] += 1
    start = time.perf_counter()
    try:
        if kind == "chat":
            status, text, error = await send_chat(client, body, stream)
        elif kind == "disconnect":
            (status, error), text = await send_disconnect(client, body), ""
        else:
            r = await send_malformed(client, model, which)
            status, error, text = r.status_code, None, r.text[:200]
    except (httpx.HTTPError, OSError, TimeoutError, ValueError, KeyError) as e:
        tally.errors[f"{label} {type(e).__name__}"] += 1
        tally.note(f"{label}: {type(e).__name__}: {e}")
        return
    seconds = time.perf_counter() - start
    if kind == "malformed":
        if 400 <= status < 500:
            tally.failed_expected[f"{label} {status}"] += 1
        else:
            tally.failed_unexpected[f"{label} {status}"] += 1
            tally.note(f"{label}: HTTP {status}: {text}")
    elif status != 200 or error:
        tally.failed_unexpected[f"{label} {status if status != 200 else 'stream_error'}"] += 1
        tally.note(f"{label} {json.dumps(body)} stream={stream}: HTTP {status}: {error}")
    else:
        tally.completed[label] += 1
        if kind == "chat":
            tally.latency.append(seconds)
            if text.strip() != answer:
                tally.wrong_answers += 1
                if len(tally.wrong_examples) < 50:
                    tally.wrong_examples.append({**body, "stream": stream, "got": text, "answer": answer})


async def client_loop(
    client: httpx.AsyncClient, model: str, seed: int, deadline: float, timeout: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline and tally.sent < tally.max_requests:
        try:
            async with asyncio.timeout(timeout):
                await one_request(client, model, rng, tally)
        except TimeoutError:
            tally.errors["timeout"] += 1
            tally.note(f"a request took more than {timeout} s")


async def run_load(url: str, model: str, args, seconds: float, seed: int, tally: Tally, on_tick=None) -> bool:
    """--clients closed-loop clients for `seconds`. False if the load had to be cancelled."""
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout, limits=limits) as client:
        deadline, timeout = time.monotonic() + seconds, args.request_timeout
        tasks = [
            asyncio.create_task(client_loop(client, model, seed * 100_003 + i, deadline, timeout, tally))
            for i in range(args.clients)
        ]
        ticker = asyncio.create_task(on_tick(deadline)) if on_tick else None
        done, pending = await asyncio.wait(tasks, timeout=seconds + args.request_timeout + 30)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if ticker:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        for t in done:
            t.result()  # a bug in this script surfaces here
        return not pending


# ----------------------------------------------------------------------------------------------
# The run


async def soak(args, proc: subprocess.Popen, url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
        model = (await probe.get("/v1/models")).json()["data"][0]["id"]
        warm = Tally(args.max_requests)
        await run_load(url, model, args, args.warmup, args.seed + 1, warm)
        idle_after_warmup, _ = await wait_idle(probe, 30)
        rss_start = rss_kib(proc.pid)
        samples = [(0.0, rss_start)]
        t0 = time.monotonic()

        async def sample_rss(deadline: float) -> None:
            last_print = t0
            while True:
                await asyncio.sleep(args.rss_interval)
                samples.append((time.monotonic() - t0, rss_kib(proc.pid)))
                if time.monotonic() - last_print >= 60:
                    last_print = time.monotonic()
                    rss = samples[-1][1] / 1024
                    print(
                        f"[{time.monotonic() - t0:5.0f} s] sent {tally.sent}, RSS {rss:.1f} MiB",
                        file=sys.stderr,
                    )

        tally = Tally(args.max_requests)
        finished = await run_load(url, model, args, args.minutes * 60, args.seed, tally, sample_rss)
        load_seconds = time.monotonic() - t0
        final, idle_seconds = await wait_idle(probe, args.idle_timeout)
        rss_end = rss_kib(proc.pid)
        samples.append((time.monotonic() - t0, rss_end))
    return {
        "model": model,
        "warmup": {
            "sent": warm.sent,
            "completed": sum(warm.completed.values()),
            "lost": warm.sent - warm.accounted(),
            "unexpected_5xx": fives(warm),
            "no_response": sum(warm.errors.values()),
        },
        "tally": tally,
        "load_finished_by_itself": finished,
        "load_seconds": load_seconds,
        "idle_seconds": idle_seconds,
        "rss_start_kib": rss_start,
        "rss_end_kib": rss_end,
        "rss_max_kib": max(kib for _, kib in samples),
        "rss_samples": samples,
        "metrics_after_warmup": idle_after_warmup,
        "metrics_end": final,
    }


def report(args, run: dict, server_exit: int | None, log_text: str) -> tuple[dict, str, list[str]]:
    tally: Tally = run["tally"]
    m = run["metrics_end"]
    gauge = {g: m.get(g, {}).get("", float("nan")) for g in GAUGES}
    unexpected_5xx = fives(tally)
    lost = tally.sent - tally.accounted()
    growth = (run["rss_end_kib"] - run["rss_start_kib"]) / run["rss_start_kib"]
    lat = sorted(tally.latency)
    problems = []
    if lost:
        problems.append(f"{lost} requests lost")
    if run["warmup"]["lost"] or run["warmup"]["unexpected_5xx"] or run["warmup"]["no_response"]:
        problems.append(f"warm-up: {run['warmup']}")
    if unexpected_5xx:
        problems.append(f"{unexpected_5xx} unexpected 5xx")
    if tally.errors:
        problems.append(
            f"{sum(tally.errors.values())} requests without a response (timeout, connection error)"
        )
    if growth > args.max_rss_growth:
        problems.append(f"RSS grew {growth:.1%} after warm-up (limit {args.max_rss_growth:.0%})")
    if gauge["dllm_kv_cache_pages_in_use"] != 0:
        problems.append(f"{gauge['dllm_kv_cache_pages_in_use']:.0f} K/V pages in use after the run")
    if gauge["dllm_num_requests_running"] or gauge["dllm_num_requests_waiting"]:
        problems.append("requests still running or waiting after the run")
    log_lines = log_text.splitlines()
    log_errors = [x for x in log_lines if "Traceback" in x or x.startswith(("ERROR", "CRITICAL"))]
    record = {
        "cpu": cpu_name(),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "model": run["model"],
        "duration_s": round(run["load_seconds"], 1),
        "warmup": run["warmup"],
        "sent": tally.sent,
        "sent_by_kind": dict(tally.sent_by_kind),
        "completed": sum(tally.completed.values()),
        "completed_by_kind": dict(tally.completed),
        "failed_by_status": dict(
            Counter(k.split()[-1] for k in (tally.failed_expected + tally.failed_unexpected).elements())
        ),
        "failed_expected_4xx": sum(tally.failed_expected.values()),
        "failed_expected_by_kind_status": dict(tally.failed_expected),
        "failed_unexpected": sum(tally.failed_unexpected.values()),
        "failed_unexpected_by_kind_status": dict(tally.failed_unexpected),
        "unexpected_5xx": unexpected_5xx,
        "errors": dict(tally.errors),
        "lost": lost,
        "wrong_answers": tally.wrong_answers,
        "wrong_answer_examples": tally.wrong_examples,
        "chat_latency_p50_s": pct(lat, 50) if lat else None,
        "chat_latency_p99_s": pct(lat, 99) if lat else None,
        "chat_requests_per_s": len(lat) / run["load_seconds"],
        "rss_start_mib": run["rss_start_kib"] / 1024,
        "rss_end_mib": run["rss_end_kib"] / 1024,
        "rss_max_mib": run["rss_max_kib"] / 1024,
        "rss_growth": growth,
        "rss_samples_mib": [(round(t, 1), round(k / 1024, 1)) for t, k in run["rss_samples"]],
        "idle_after_s": round(run["idle_seconds"], 1),
        "metrics_after_warmup": {g: run["metrics_after_warmup"].get(g, {}).get("") for g in GAUGES},
        "metrics_end": {
            **{g: gauge[g] for g in GAUGES},
            "dllm_requests_total": m.get("dllm_requests_total", {}),
            "dllm_request_finished_total": m.get("dllm_request_finished_total", {}),
        },
        "load_finished_by_itself": run["load_finished_by_itself"],
        "server_exit_status": server_exit,
        "server_log_error_lines": log_errors[:20],
        "unexpected_examples": tally.examples,
        "problems": problems,
        "passed": not problems,
    }
    f = record
    lines = [
        f"Soak: `dllm serve` (demo model, `--threads 1`, loopback), {args.clients} clients for "
        f"{args.minutes:g} min after {args.warmup:g} s of warm-up, seed {args.seed}; CPU: {f['cpu']}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests sent | {f['sent']} ({joined(tally.sent_by_kind)}) |",
        f"| completed | {f['completed']} ({joined(tally.completed)}) |",
        f"| failed, by status | {joined(f['failed_by_status'])} |",
        f"| failed, expected 4xx (malformed) | {f['failed_expected_4xx']} "
        f"({joined(tally.failed_expected)}) |",
        f"| failed, unexpected | {f['failed_unexpected']} {joined(tally.failed_unexpected)} |",
        f"| unexpected 5xx | {unexpected_5xx} |",
        f"| no response (timeout, connection error) | {sum(tally.errors.values())} {joined(tally.errors)} |",
        f"| lost | {lost} |",
        f"| chat answers not the task's exact answer | {tally.wrong_answers} of {len(lat)} |",
        f"| chat latency p50 / p99 (s) | {f['chat_latency_p50_s'] or 0:.3f} / "
        f"{f['chat_latency_p99_s'] or 0:.3f} |",
        f"| completed chat requests/s | {f['chat_requests_per_s']:.2f} |",
        f"| server RSS after warm-up / end / max (MiB) | {f['rss_start_mib']:.1f} / {f['rss_end_mib']:.1f} / "
        f"{f['rss_max_mib']:.1f} ({growth:+.1%}) |",
        f"| /metrics at the end: running, waiting | {gauge['dllm_num_requests_running']:.0f}, "
        f"{gauge['dllm_num_requests_waiting']:.0f} (idle {f['idle_after_s']} s after the load) |",
        f"| /metrics at the end: K/V pages in use / total | {gauge['dllm_kv_cache_pages_in_use']:.0f} / "
        f"{gauge['dllm_kv_cache_pages_total']:.0f} |",
        f"| server exit status (SIGTERM) | {server_exit} |",
        f"| server log error lines | {len(log_errors)} |",
        f"| verdict | {'pass' if not problems else 'FAIL: ' + '; '.join(problems)} |",
    ]
    return record, "\n".join(lines), problems


def joined(counts: dict) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the measured load (default 10)")
    ap.add_argument("--clients", type=int, default=64, help="concurrent closed-loop clients (default 64)")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds of load before the first RSS sample")
    ap.add_argument("--max-requests", type=int, default=1_000_000, help="stop sending after this many")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="seconds one request may take")
    ap.add_argument("--idle-timeout", type=float, default=60.0, help="seconds the server gets to go idle")
    ap.add_argument("--max-rss-growth", type=float, default=0.10, help="allowed RSS growth (fraction)")
    ap.add_argument("--rss-interval", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=str(ROOT / "models" / "demo"))
    add_out_argument(ap)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        proc, url = start_server(Path(args.model), log_path, [])
        try:
            run = asyncio.run(soak(args, proc, url))
        finally:
            server_exit = stop_server(proc)
        log_text = log_path.read_text(errors="replace")
    record, table, problems = report(args, run, server_exit, log_text)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak_cpu.md").write_text(table + "\n")
    (out / "soak_cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
