"""ServerConfig: the HTTP layer's settings, built once from the CLI flags (or by a test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class ServerConfig:
    served_model_name: str  # what requests must send as `model`, and what /v1/models lists
    api_key: str | None = None  # None: no authentication
    request_timeout_s: float | None = 600.0  # arrival to last block; None: no limit
    drain_timeout_s: float = 30.0  # on shutdown, in-flight requests get this long to finish
    max_request_bytes: int = 4 * 2**20  # larger bodies are refused (413) before parsing
    max_prompts_per_request: int = 16  # engine requests one request may make: prompts x n
    # Without an API key, the Host names /v1/* accept besides IP addresses ("*": any); with a key,
    # any. Browser origins allowed to call the API (CORS; "*": any).
    allowed_hosts: tuple[str, ...] = ("localhost",)
    allowed_origins: tuple[str, ...] = ()
    # Server-side sampling defaults: a request's unset fields take these, then the checkpoint's.
    defaults: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self):
        if not self.served_model_name:
            raise ValueError("the served model name must not be empty")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key must not be empty")
        if self.request_timeout_s is not None and not self.request_timeout_s > 0:
            raise ValueError(f"request timeout must be positive; got {self.request_timeout_s}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain timeout must be >= 0; got {self.drain_timeout_s}")
        if self.max_prompts_per_request < 1:
            raise ValueError(f"max prompts per request must be >= 1; got {self.max_prompts_per_request}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max request bytes must be at least 1024; got {self.max_request_bytes}")
