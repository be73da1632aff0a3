#!/usr/bin/env bash
# Smoke test of the project's Dockerfile on a machine without Docker, a GPU or a registry:
#
#   scripts/podman_smoke.sh [--out FILE] [--model DIR] [--rmi]
#
# 1. makes a Debian base image (python3, python3-venv, python3-pip, curl) with debootstrap, cached in
#    $DLLM_SMOKE_CACHE, and `podman import`s it (skipped when the image already exists);
# 2. fills a wheel directory with `pip download` on this host (torch==2.13.0 CPU and the project's
#    dependencies), so the build needs no network: the build sees it as /wheels;
# 3. builds the repository's Dockerfile unchanged, with the CPU base and TORCH_INSTALL build arguments,
#    using `podman build --isolation=chroot`;
# 4. runs the image (runc, lowered ulimits, port published on 127.0.0.1 only), configured through the
#    documented DLLM_* environment variables, waits for GET /health, checks /v1/models and /metrics,
#    sends one chat request, runs the image's own HEALTHCHECK, prints a summary and removes the
#    container (--rmi also removes the built image; the base image and wheels stay cached).
#    Without --model the image serves its shipped demo model; --model DIR mounts a checkpoint read-only
#    at /models/<basename of DIR> and points DLLM_MODEL at it, as a GPU deployment does.
#
# Exit status 0 when the server became healthy and the chat request got HTTP 200; 1 otherwise.
# Needs root (or rootless podman set up), podman, buildah, runc and debootstrap (installed with
# apt-get when missing and running as root). Takes 5-10 minutes on 2 cores on a first run.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${DLLM_SMOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dllm-podman-smoke}"
SUITE="${DLLM_SMOKE_SUITE:-bookworm}"                 # Debian release of the base (python 3.11)
BASE_IMAGE="localhost/dllm-debian-base:${SUITE}"
IMAGE="${DLLM_SMOKE_IMAGE:-localhost/dllm-serve:cpu-smoke}"
TORCH_REQ="${DLLM_SMOKE_TORCH:-torch==2.13.0}"
PORT="${DLLM_SMOKE_PORT:-18000}"                     # host port, bound to 127.0.0.1 only
HEALTH_TIMEOUT="${DLLM_SMOKE_HEALTH_TIMEOUT:-600}"
MEMORY="${DLLM_SMOKE_MEMORY:-6g}"
PYTHON="${PYTHON:-python3}"
API_KEY="smoke-test-key"
SERVED_NAME="dllm-demo-smoke"
CONTAINER="dllm-smoke-$$"
ARGS="$*"
OUT=""
MODEL_DIR=""
RMI=0

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --model) MODEL_DIR="$(cd "$2" && pwd)"; shift 2 ;;
        --rmi) RMI=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[podman-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
SUMMARY=()
note() { SUMMARY+=("$*"); }

WORK="$(mktemp -d)"
cleanup() {
    podman rm -f -t 5 "$CONTAINER" > /dev/null 2>&1 || true
    if [ "$RMI" = 1 ]; then podman rmi -f "$IMAGE" > /dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- tools -------------------------------------------------------------------------------------
missing=()
for tool in podman buildah runc debootstrap curl; do
    command -v "$tool" > /dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        log "installing ${missing[*]} with apt-get"
        apt-get update -q > /dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap podman buildah runc curl > /dev/null
    else
        echo "missing tools: ${missing[*]} (Debian: apt-get install debootstrap podman buildah runc curl)" >&2
        exit 2
    fi
fi
mkdir -p "$CACHE"
# What `podman run` needs on these machines: runc, and open-file/process limits the host allows.
RUN_OPTS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# --- 1. Debian base image ----------------------------------------------------------------------
t0=$SECONDS
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE exists"
else
    tarball="$CACHE/debian-${SUITE}-rootfs.tar"
    if [ ! -s "$tarball" ]; then
        log "debootstrap $SUITE into $CACHE (about a minute)"
        rootfs="$CACHE/rootfs-$SUITE.tmp"
        rm -rf "$rootfs"
        # DEBIAN_MIRROR unset: debootstrap's default mirror.
        # shellcheck disable=SC2086
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,curl,ca-certificates \
            "$SUITE" "$rootfs" ${DEBIAN_MIRROR:-} > "$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    log "podman import $tarball"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" > /dev/null 2>&1
fi
base_python="$(podman run --rm "${RUN_OPTS[@]}" --network none "$BASE_IMAGE" python3 -c \
    'import sys; print("%d.%d" % sys.version_info[:2])')"
note "base image       : $BASE_IMAGE (debootstrap $SUITE minbase, python $base_python), ready in $((SECONDS - t0)) s"

# --- 2. wheel directory for an offline build ----------------------------------------------------
host_python="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$host_python" != "$base_python" ]; then
    echo "host $PYTHON is $host_python but the base image has python $base_python: set PYTHON to a" \
        "python$base_python (pip download resolves wheels for the interpreter that runs it)" >&2
    exit 2
fi
t0=$SECONDS
wheels="$CACHE/wheels"
mkdir -p "$wheels"
"$PYTHON" -c "import tomllib; p = tomllib.load(open('$REPO/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p.get('optional-dependencies', {}).get('server', [])))" \
    > "$WORK/requirements.txt"
log "pip download into $wheels: $TORCH_REQ + $(wc -l < "$WORK/requirements.txt") project requirements"
"$PYTHON" -m pip download -q -d "$wheels" "$TORCH_REQ" -r "$WORK/requirements.txt" "setuptools>=68" wheel \
    > "$WORK/pip-download.log" 2>&1 || { tail -20 "$WORK/pip-download.log" >&2; exit 1; }
note "wheel directory  : $(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$wheels" | cut -f1), ready in $((SECONDS - t0)) s"

# --- 3. build the repository's Dockerfile with the CPU base -------------------------------------
t0=$SECONDS
log "podman build $IMAGE (BASE_IMAGE=$BASE_IMAGE, TORCH_INSTALL=$TORCH_REQ)"
# chroot isolation only allows the host network; the build stays offline through PIP_NO_INDEX.
# --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
if ! podman build --isolation=chroot --format docker --network host \
        -f "$REPO/Dockerfile" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "TORCH_INSTALL=$TORCH_REQ" \
        --build-arg PIP_NO_INDEX=1 \
        --build-arg PIP_FIND_LINKS=/wheels \
        -v "$wheels:/wheels:ro" \
        -t "$IMAGE" "$REPO" > "$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    exit 1
fi
build_s=$((SECONDS - t0))
cp "$WORK/build.log" "$CACHE/last-build.log"
steps="$(grep -c '^STEP ' "$WORK/build.log" || true)"
cached="$(grep -c -- '--> Using cache' "$WORK/build.log" || true)"
rebuilt="$(awk '
    function flush() { if (cur != "" && !hit && kind ~ /^(RUN|COPY)$/) out = out (out == "" ? "" : ", ") cur }
    /^STEP / { flush(); kind = $3; cur = "step " substr($2, 1, index($2, "/") - 1) " " $3 " " $4; hit = 0 }
    /--> Using cache/ { hit = 1 }
    END { flush(); print out }' "$WORK/build.log")"
image_size="$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"
torch_line="$(grep -m1 '^torch ' "$WORK/build.log" || echo 'torch: cached layer')"
note "image            : $IMAGE, $image_size, built in $build_s s ($torch_line)"
note "build cache      : $cached of $steps steps from cache; rebuilt RUN/COPY steps: ${rebuilt:-none}"
note "image config     : user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" \
    "entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")" \
    "exposed=$(podman image inspect --format '{{json .Config.ExposedPorts}}' "$IMAGE")"

# --- 4. run, wait for /health, one chat request --------------------------------------------------
MODEL_OPTS=()
model_desc="the image's shipped demo model (no DLLM_MODEL, no mount)"
if [ -n "$MODEL_DIR" ]; then
    mount="/models/$(basename "$MODEL_DIR")"
    MODEL_OPTS=(-v "$MODEL_DIR:$mount:ro" -e "DLLM_MODEL=$mount")
    model_desc="$MODEL_DIR mounted read-only at $mount, DLLM_MODEL=$mount"
fi
note "model            : $model_desc"
t0=$SECONDS
log "podman run $CONTAINER on 127.0.0.1:$PORT"
# --health-interval disable: no systemd timer here; the HEALTHCHECK is run once by hand below.
podman run -d --name "$CONTAINER" "${RUN_OPTS[@]}" \
    --memory "$MEMORY" --health-interval disable \
    -p "127.0.0.1:$PORT:8000" \
    "${MODEL_OPTS[@]}" \
    -e DLLM_API_KEY="$API_KEY" \
    -e DLLM_SERVED_MODEL_NAME="$SERVED_NAME" \
    -e DLLM_MAX_NUM_SEQS=4 \
    -e OMP_NUM_THREADS=2 \
    "$IMAGE" > /dev/null 2> "$WORK/run.log" || { cat "$WORK/run.log" >&2; exit 1; }
url="http://127.0.0.1:$PORT"
healthy=0
while [ $((SECONDS - t0)) -lt "$HEALTH_TIMEOUT" ]; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$CONTAINER")" != true ]; then
        log "container exited"; break
    fi
    if curl -fsS -o "$WORK/health.txt" "$url/health" 2> /dev/null; then healthy=1; break; fi
    sleep 2
done
if [ "$healthy" != 1 ]; then
    note "health           : FAILED after $((SECONDS - t0)) s; container log tail:"
    while IFS= read -r line; do note "    $line"; done < <(podman logs --tail 30 "$CONTAINER" 2>&1)
else
    note "health           : GET /health -> 200 '$(head -c 200 "$WORK/health.txt")' after $((SECONDS - t0)) s"
    note "server log       : $(podman logs "$CONTAINER" 2>&1 | grep -m1 -o 'serving .*' || echo n/a)"
fi

chat_ok=0
if [ "$healthy" = 1 ]; then
    models_code="$(curl -sS -o "$WORK/models.json" -w '%{http_code}' -H "Authorization: Bearer $API_KEY" "$url/v1/models")"
    note "models           : GET /v1/models -> $models_code $(head -c 200 "$WORK/models.json")"
    noauth_code="$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"model": "x", "messages": [{"role": "user", "content": "hi"}]}' "$url/v1/chat/completions")"
    note "auth             : POST /v1/chat/completions without the DLLM_API_KEY bearer -> $noauth_code"
    prompt="reverse abcde"
    body="{\"model\": \"$SERVED_NAME\", \"messages\": [{\"role\": \"user\", \"content\": \"$prompt\"}], \"max_tokens\": 32, \"temperature\": 0}"
    read -r chat_code chat_time < <(curl -sS -o "$WORK/chat.json" -w '%{http_code} %{time_total}\n' \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $API_KEY" -d "$body" \
        "$url/v1/chat/completions")
    answer="$("$PYTHON" -c "import json, sys; d = json.load(open(sys.argv[1])); \
print(repr(d['choices'][0]['message']['content']), d.get('usage'))" "$WORK/chat.json" 2> /dev/null \
        || head -c 300 "$WORK/chat.json")"
    note "chat             : POST /v1/chat/completions '$prompt' (expected 'edcba') -> $chat_code in ${chat_time} s: $answer"
    [ "$chat_code" = 200 ] && chat_ok=1
    metrics_code="$(curl -sS -o "$WORK/metrics.txt" -w '%{http_code}' "$url/metrics")"
    note "metrics          : GET /metrics -> $metrics_code, $(grep -c '^dllm_' "$WORK/metrics.txt" || true) dllm_ samples:" \
        "$(grep -E '^dllm_num_requests_(running|waiting)' "$WORK/metrics.txt" | tr '\n' ' ')"
    if hc="$(podman healthcheck run "$CONTAINER" 2>&1)"; then
        note "HEALTHCHECK      : podman healthcheck run (the image's own HEALTHCHECK) -> ${hc:-healthy}"
    else
        note "HEALTHCHECK      : podman healthcheck run -> $hc"
    fi
    note "memory           : $(podman stats --no-stream --format '{{.MemUsage}}' "$CONTAINER" 2>/dev/null || echo n/a)"
fi

status=FAILED
[ "$healthy" = 1 ] && [ "$chat_ok" = 1 ] && status=PASSED
{
    echo "dllm-serve podman smoke test: $status"
    echo "date             : $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host             : $(uname -m), $(nproc) cores, $(podman --version), $(buildah --version | cut -d' ' -f1-3)"
    echo "commit           : $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo n/a)$([ -z "$(git -C "$REPO" status --porcelain -- Dockerfile .dockerignore engine models kernels server pyproject.toml 2>/dev/null)" ] || echo ' + uncommitted changes in the build context')"
    echo "command          : scripts/podman_smoke.sh${ARGS:+ $ARGS}"
    printf '%s\n' "${SUMMARY[@]}"
} | if [ -n "$OUT" ]; then mkdir -p "$(dirname "$OUT")"; tee "$OUT"; else cat; fi
[ "$status" = PASSED ]
