# dllm-serve: OpenAI-compatible inference server for masked diffusion LMs (LLaDA family).
#
# GPU image (default base: the public PyTorch CUDA runtime image, torch already inside):
#   docker build -t dllm-serve .
#   docker run --gpus all -p 8000:8000 dllm-serve                       # serves the shipped demo model
#   docker run --gpus all -p 8000:8000 -v /data/LLaDA-8B-Instruct:/models/llada-8b-instruct:ro \
#       -e DLLM_MODEL=/models/llada-8b-instruct dllm-serve
#
# CPU variant (any Debian/Ubuntu base with python3 >= 3.10 and python3-venv; torch is pip-installed):
#   docker build --build-arg BASE_IMAGE=<debian-with-python3-venv> \
#       --build-arg TORCH_INSTALL="torch==2.13.0" -t dllm-serve:cpu .
#   scripts/podman_smoke.sh builds and runs exactly that with podman from a locally made Debian base.
#
# Configuration: every `dllm serve` flag can be appended to `docker run IMAGE ...`, or set through the
# environment: DLLM_MODEL, DLLM_HOST, DLLM_PORT, DLLM_API_KEY, DLLM_SERVED_MODEL_NAME,
# DLLM_MAX_NUM_SEQS, DLLM_MAX_WAITING, DLLM_ALLOWED_HOSTS, DLLM_ALLOWED_ORIGINS (the README's "Flags
# and environment variables" lists them all). Flags win over the environment.

ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# "skip": the base image already has a CUDA torch (it must not be reinstalled); otherwise one pip
# requirement such as "torch==2.13.0", installed into the image's virtual environment (pick the
# index with PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, e.g. PyTorch's own CPU wheel index).
ARG TORCH_INSTALL=skip
# Optional package sources for builds behind a mirror or from a local wheel directory; pip reads them
# from the environment of each RUN (they are build arguments only and do not persist in the image).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_CERT
ARG DLLM_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV VIRTUAL_ENV=/opt/dllm/venv \
    PATH=/opt/dllm/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# Layer 1 (changes with the base or TORCH_INSTALL only): non-root user, model mount point, and a
# virtual environment that sees the base image's site-packages, so the CUDA torch of the PyTorch base
# image is used as it is.
# DL3013 (pin versions in pip): the torch requirement is the TORCH_INSTALL build argument itself,
# pinned by whoever builds ("torch==2.13.0"); hadolint cannot see through the variable.
# hadolint ignore=DL3013
RUN groupadd --gid "${DLLM_UID}" dllm \
    && useradd --uid "${DLLM_UID}" --gid "${DLLM_UID}" --create-home --home-dir /home/dllm \
        --shell /usr/sbin/nologin dllm \
    && mkdir -p /models /opt/dllm/src \
    && python3 -m venv --system-site-packages "${VIRTUAL_ENV}" \
    && if [ "${TORCH_INSTALL}" != "skip" ]; then pip install "${TORCH_INSTALL}"; fi \
    && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# Triton JIT-compiles a small C launcher per kernel on the GPU, so a CUDA image needs a C compiler;
# older PyTorch runtime images ship none. CPU images run the torch reference ops and skip this.
# DL3008 (pin versions in apt-get install): gcc and libc6-dev are whatever the base image's
# distribution release carries; pinning would break every change of BASE_IMAGE.
# hadolint ignore=DL3008
RUN if python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" \
        && ! command -v cc > /dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Layer 2 (changes with pyproject.toml only): the project's runtime dependencies, read from
# pyproject.toml ([project].dependencies plus the optional "server" extra when it exists). A torch
# already present satisfies the torch requirement, so nothing large is reinstalled here.
COPY pyproject.toml /opt/dllm/src/pyproject.toml
RUN python -c "import importlib, sys; \
toml = importlib.import_module('tomllib' if sys.version_info >= (3, 11) else 'pip._vendor.tomli'); \
project = toml.load(open('/opt/dllm/src/pyproject.toml', 'rb'))['project']; \
reqs = project['dependencies'] + project.get('optional-dependencies', {}).get('server', []); \
print('\n'.join(reqs))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Layer 3 (changes with the code): the package itself, without touching the dependencies. The shipped
# demo checkpoint (models/demo) is package data, so `dllm serve` with no model answers out of the box.
COPY . /opt/dllm/src
RUN pip install --no-deps /opt/dllm/src \
    && rm -rf /opt/dllm/src/build \
    && dllm --help > /dev/null

ENV DLLM_HOST=0.0.0.0 \
    DLLM_PORT=8000 \
    HOME=/home/dllm

USER ${DLLM_UID}:${DLLM_UID}
WORKDIR /home/dllm
EXPOSE 8000

# Loading a large checkpoint takes minutes: failures during the start period do not count. An
# uncaught exception (refused connection, HTTP error, timeout) exits 1, i.e. unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('DLLM_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["dllm", "serve"]
CMD []
