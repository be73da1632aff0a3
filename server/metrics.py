"""Prometheus metrics (names prefixed dllm_), one registry per app, served at GET /metrics.

Who writes what: the ASGI middleware counts HTTP requests by endpoint and status; the engine's
step listener (called on the engine thread; prometheus-client is thread-safe) records forward
passes, rows per forward and step latency; the generation code records tokens, time to first block,
end-to-end latency and finish reasons; the running/waiting gauges read the AsyncEngine, and the K/V
cache gauges its page allocator, at scrape time (single reads of a list's length: safe while the
engine thread allocates and frees, and current however long the engine has been idle).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.outputs import StepStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "dllm_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("dllm_prompt_tokens", "prompt tokens of admitted requests", registry=r)
        self.generation_tokens = Counter(
            "dllm_generation_tokens", "tokens made final (streamed or returned)", registry=r
        )
        self.finished = Counter(
            "dllm_request_finished",
            "engine requests by how they ended (stop, length, abort = client gone or timed out, error)",
            ["finish_reason"],
            registry=r,
        )
        self.forward_passes = Counter(
            "dllm_forward_passes", "engine steps that ran a model forward", registry=r
        )
        self.reused_rows = Counter(
            "dllm_reused_rows",
            "request steps served from the previous forward (canvas unchanged, no row)",
            registry=r,
        )
        self.step_latency = Histogram(
            "dllm_step_duration_seconds",
            "engine step latency (schedule, execute, update)",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "dllm_batch_rows", "rows per forward pass", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "dllm_batch_tokens",
            "canvas positions per forward pass",
            buckets=tuple(64 * 2**i for i in range(12)),
            registry=r,
        )
        self.running = Gauge("dllm_num_requests_running", "engine requests denoising", registry=r)
        self.waiting = Gauge("dllm_num_requests_waiting", "engine requests queued", registry=r)
        self.kv_pages_in_use = Gauge(
            "dllm_kv_cache_pages_in_use", "K/V cache pages held by cached requests", registry=r
        )
        self.kv_pages_total = Gauge("dllm_kv_cache_pages_total", "K/V cache pages in the pool", registry=r)
        self.kv_usage = Gauge(
            "dllm_kv_cache_usage_ratio", "fraction of K/V cache pages in use (0 to 1)", registry=r
        )
        self.graphs_captured = Gauge(
            "dllm_cuda_graphs_captured", "CUDA graphs of the cached block step captured so far", registry=r
        )
        self.graph_capture_seconds = Gauge(
            "dllm_cuda_graph_capture_seconds", "time spent capturing CUDA graphs, in all", registry=r
        )
        self.graph_memory = Gauge(
            "dllm_cuda_graph_memory_bytes", "device memory the captures added (reserved), in all", registry=r
        )
        self.graph_replays = Gauge(
            "dllm_cuda_graph_replays", "engine steps whose network ran as a CUDA graph replay", registry=r
        )
        self.time_to_first_block = Histogram(
            "dllm_time_to_first_block_seconds",
            "arrival to first finished block",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "dllm_e2e_request_latency_seconds", "arrival to last block", buckets=LATENCY_BUCKETS, registry=r
        )

    def bind(self, async_engine) -> None:
        """Read the engine's queue sizes and K/V pages at scrape time and listen to its steps."""
        self.running.set_function(lambda: async_engine.num_running)
        self.waiting.set_function(lambda: async_engine.num_waiting)
        pages = async_engine.engine.kv_cache.allocator
        self.kv_pages_in_use.set_function(lambda: pages.num_used)
        self.kv_pages_total.set(pages.num_pages)
        self.kv_usage.set_function(lambda: pages.usage)
        runner = async_engine.engine.runner  # its graphs: None when off
        for gauge, field in (
            (self.graphs_captured, "num_captured"),
            (self.graph_capture_seconds, "capture_s"),
            (self.graph_memory, "capture_bytes"),
            (self.graph_replays, "num_replays"),
        ):
            gauge.set_function(lambda field=field: getattr(runner.graphs, field, 0))
        async_engine.engine.step_listeners.append(self.on_step)

    def on_step(self, stats: StepStats) -> None:
        self.step_latency.observe(stats.duration_s)
        self.reused_rows.inc(stats.num_reused)
        if stats.num_rows:
            self.forward_passes.inc()
            self.batch_rows.observe(stats.num_rows)
            self.batch_tokens.observe(stats.num_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware: count every HTTP request by endpoint (known paths, else "other") and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
