"""Helpers for the HTTP tests: a `dllm serve` subprocess, metric reading, error-body checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m engine.cli serve ...` with its output in a log file; ready once /health is 200."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *flags: str,
        script: Path | None = None,
        extra_env: dict | None = None,
        api_key: str | None = API_KEY,
    ):
        """`script`: a Python file run instead of `-m engine.cli` with `serve`'s arguments (fault
        injection); `extra_env`: more environment variables; `api_key`: None for none."""
        self.api_key = api_key
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLLM_")}
        env["PYTHONPATH"] = str(REPO)
        # Small models on a shared 2-core machine: one torch thread avoids oversubscription stalls.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(extra_env or {})
        launcher = [str(script)] if script is not None else ["-m", "engine.cli", "serve"]
        cmd = [
            sys.executable,
            *launcher,
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(["--api-key", api_key] if api_key is not None else []),
            "--log-level",
            "warning",
            *flags,
        ]
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server not ready after {STARTUP_TIMEOUT_S}s:\n{self.log()}")

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    @property
    def headers(self) -> dict:
        """The key (if any) and the JSON Content-Type POST bodies need."""
        key = {"Authorization": f"Bearer {self.api_key}"} if self.api_key is not None else {}
        return {**key, "Content-Type": "application/json"}

    def log(self) -> str:
        return self.log_path.read_text()[-5000:]

    def metrics(self) -> dict[tuple, float]:
        """{(sample name, sorted label items): value} from GET /metrics."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until the engine has nothing running or waiting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.metrics()
            if m[("dllm_num_requests_running", ())] == 0 and m[("dllm_num_requests_waiting", ())] == 0:
                return
            time.sleep(0.1)
        raise AssertionError("engine still busy")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def fault_server(model_dir: Path, log_path: Path, fault: str, *flags: str) -> ServerProcess:
    """A server whose engine breaks as fault_serve.py's `fault` says, once it has started."""
    script = Path(__file__).with_name("fault_serve.py")
    return ServerProcess(model_dir, log_path, *flags, script=script, extra_env={"DLLM_TEST_FAULT": fault})


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    """An OpenAI error body with the given status (and param / code when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if param is not None:
        assert err["param"] == param, err
    assert isinstance(err["code"], str) and err["code"], err  # every error has a code
    if code is not None:
        assert err["code"] == code, err
    return err
