"""Schemathesis against a real `dllm serve`: requests generated from /openapi.json (valid and
invalid bodies, every operation), a fixed seed and example count (about 15 s on 2 cores). Fails on
any 5xx, or a status, content type, header or body the document does not describe."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from http_helpers import API_KEY, ServerProcess

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.mark.slow
def test_schemathesis_finds_nothing(model_dir, tmp_path):
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.exists() and shutil.which("schemathesis") is None:
        pytest.fail("schemathesis is not installed: `make install` (the test extra) installs it")
    server = ServerProcess(model_dir, tmp_path / "server.log")
    try:
        run = subprocess.run(
            [
                str(cli) if cli.exists() else "schemathesis",
                "run",
                server.base_url + "/openapi.json",
                "--header",
                f"Authorization: Bearer {API_KEY}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--workers",
                "1",
                "--request-timeout",
                "60",
                "--generation-database",
                "none",
                "--no-color",
            ],
            cwd=tmp_path,  # nothing written into the repository
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:] + "\nserver log:\n" + server.log()
