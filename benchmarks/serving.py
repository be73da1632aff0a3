"""HTTP serving benchmark: a closed-loop load generator against `dllm serve`, swept over concurrency,
compared with the offline engine on the same request mix.

    python benchmarks/serving.py                            # tiny random model (as benchmarks/offline.py)
    python benchmarks/serving.py --model models/demo --concurrency 1,8,32
    python benchmarks/serving.py --url http://127.0.0.1:8000 --model-name demo --no-offline

The mix is fixed by --seed: token-id prompts of --prompt-len-range tokens, max_tokens drawn from
--max-tokens, steps = max_tokens (one token per step), ignore_eos so every request does its full work.
Every request streams (stream_options.include_usage): time to first block = first chunk, end-to-end =
[DONE], generated tokens = usage.completion_tokens. At concurrency C, C clients each send their next
request as soon as the last one finished; the offline figure runs the same requests through
`LLM.generate` with max_num_seqs = C, so the gap is what the HTTP layer costs.

Prints a table and writes OUT/serving_<device>_<model>.{md,json} (--out; default benchmarks/scratch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_out import add_out_argument  # noqa: E402


def make_mix(
    seed: int,
    num: int,
    prompt_lens: tuple[int, int],
    max_tokens: list[int],
    block_length: int,
    vocab: tuple[int, int],
) -> list[dict]:
    rng = random.Random(seed)
    mix = []
    for _ in range(num):
        n = rng.choice(max_tokens)
        prompt = [rng.randrange(*vocab) for _ in range(rng.randint(*prompt_lens))]
        mix.append(
            {
                "prompt": prompt,
                "max_tokens": n,
                "steps": n,
                "block_length": min(block_length, n),
                "temperature": 0.0,
                "ignore_eos": True,
            }
        )
    return mix


async def one_request(client: httpx.AsyncClient, model: str, req: dict) -> dict:
    body = {"model": model, **req, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread()).decode()[:300]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk["choices"] and first is None:
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {"ttfb": (first or end) - start, "e2e": end - start, "tokens": tokens}


async def run_level(url: str, model: str, api_key: str | None, mix: list[dict], concurrency: int) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:
        queue = list(reversed(mix))
        results = []

        async def worker():
            while queue:
                results.append(await one_request(client, model, queue.pop()))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    ttfb = sorted(r["ttfb"] for r in results)
    e2e = sorted(r["e2e"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "seconds": seconds,
        "requests_per_s": len(results) / seconds,
        "tokens_per_s": tokens / seconds,
        "generated_tokens": tokens,
        "ttfb_p50": pct(ttfb, 50),
        "ttfb_p99": pct(ttfb, 99),
        "e2e_p50": pct(e2e, 50),
        "e2e_p99": pct(e2e, 99),
    }


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def offline_level(model_dir: Path, mix: list[dict], concurrency: int, device: str) -> dict:
    from engine.llm import LLM
    from engine.sampling_params import SamplingParams

    llm = LLM(model_dir, device=device, max_num_seqs=concurrency)
    params = [SamplingParams(**{k: v for k, v in r.items() if k != "prompt"}) for r in mix]
    prompts = [r["prompt"] for r in mix]
    llm.generate(prompt_token_ids=prompts[:2], sampling_params=params[:2])  # warm-up
    start = time.perf_counter()
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outs)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "requests_per_s": len(mix) / seconds,
    }


def start_server(
    model_dir: Path, max_num_seqs: int, device: str, threads: int | None, log_path: Path
) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLLM_")}
    env["PYTHONPATH"] = str(ROOT)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--device",
        device,
        "--max-num-seqs",
        str(max_num_seqs),
        "--max-waiting",
        "4096",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return f"CPU {platform.machine()} x{os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def tiny_model(out_dir: Path) -> Path:
    """The same tiny random model as benchmarks/offline.py (d=256, 4 layers)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from offline import tiny_model as offline_tiny_model

    return offline_tiny_model(out_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: a tiny random model)")
    ap.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    ap.add_argument("--model-name", default=None, help="with --url: the served model name")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for the server and the offline engine alike (default: torch's)",
    )
    ap.add_argument("--concurrency", default="1,4,16,32")
    ap.add_argument("--num-requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--prompt-len-range", default="16,64")
    ap.add_argument("--max-tokens", default="32,64", help="max_tokens values the mix draws from")
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-offline", action="store_true", help="skip the offline engine comparison")
    add_out_argument(ap)
    args = ap.parse_args(argv)

    levels = [int(c) for c in args.concurrency.split(",")]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lo, hi = (int(x) for x in args.prompt_len_range.split(","))
    mix = make_mix(
        args.seed,
        args.num_requests,
        (lo, hi),
        [int(x) for x in args.max_tokens.split(",")],
        args.block_length,
        (10, 200),
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else tiny_model(Path(tmp) / "tiny")
        http = []
        proc = None
        if args.url:
            url, name = args.url, args.model_name or model_dir.resolve().name
        else:
            proc, url = start_server(
                model_dir, max(levels), args.device, args.threads, Path(tmp) / "server.log"
            )
            name = model_dir.resolve().name
        offline = {}
        try:
            asyncio.run(run_level(url, name, args.api_key, mix[:4], 2))  # warm-up
            # Level by level, HTTP then offline (the server idles meanwhile), so that drifting load on
            # a shared machine hits both alike.
            for c in levels:
                http.append(asyncio.run(run_level(url, name, args.api_key, mix, c)))
                print(f"http    c={c}: {http[-1]['tokens_per_s']:.1f} tok/s", file=sys.stderr)
                if not args.no_offline:
                    offline[c] = offline_level(model_dir, mix, c, args.device)
                    print(f"offline c={c}: {offline[c]['tokens_per_s']:.1f} tok/s", file=sys.stderr)
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)

    dev = device_name(args.device)
    what = args.model or "tiny random model (d=256, 4 layers)"
    header = (
        f"HTTP serving (`dllm serve`, streamed /v1/completions), {what}, device: {dev}; "
        f"{args.num_requests} requests per level, seed {args.seed}, prompt {lo}-{hi} tokens, "
        f"max_tokens from {{{args.max_tokens}}}, block {args.block_length}, one token per step"
    )
    lines = [
        header,
        "",
        "| concurrency | req/s | gen tok/s | offline tok/s | HTTP / offline | TTFB p50 (s) "
        "| TTFB p99 (s) | E2E p50 (s) | E2E p99 (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in http:
        off = offline.get(r["concurrency"])
        ratio = f"{r['tokens_per_s'] / off['tokens_per_s']:.2f}" if off else "-"
        off_tps = f"{off['tokens_per_s']:.1f}" if off else "-"
        lines.append(
            f"| {r['concurrency']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{off_tps} | {ratio} | {r['ttfb_p50']:.3f} | {r['ttfb_p99']:.3f} | "
            f"{r['e2e_p50']:.3f} | {r['e2e_p99']:.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if "CPU" not in dev else "cpu"
    stem = f"serving_{tag}_" + (Path(args.model).resolve().name if args.model else "tiny")
    (out / f"{stem}.md").write_text(table + "\n")
    ratios = [r["tokens_per_s"] / offline[r["concurrency"]]["tokens_per_s"] for r in http if offline]
    record = {
        "device": dev,
        "header": header,
        "args": vars(args),
        "http": http,
        "offline": list(offline.values()),
        "median_http_over_offline": statistics.median(ratios) if ratios else None,
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
