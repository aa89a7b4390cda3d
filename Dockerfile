# unlearnd: one image for every role (api, worker, beat, migrate); the command picks the role.
#
# Base: python:3.11-slim, not nvidia/cuda. The torch==2.14.1 / torchvision==0.29.1 wheels on
# PyPI are CUDA builds that carry their own CUDA runtime, cuDNN and NCCL (the nvidia-* wheels
# they depend on), so a CUDA base image would only add a second, unused copy of those
# libraries and a Python we would still have to install. The host needs the NVIDIA driver and
# the NVIDIA Container Toolkit; the GPU comes in through the compose device reservation
# (`docker run --gpus` likewise). Without a GPU the same image runs on CPU.
FROM python:3.11-slim-bookworm

# NVIDIA_DRIVER_CAPABILITIES is read by the NVIDIA runtime when it mounts the driver; which
# devices a container sees is chosen per container (the compose reservation), so the api
# container gets no GPU.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN python -m venv "$VIRTUAL_ENV"

WORKDIR /src

# Dependencies first, from the lock alone (exact versions, each checked against its hash;
# `make lock` refreshes it), so the multi-gigabyte torch layer stays cached while only the
# code changes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock && rm requirements.lock

COPY pyproject.toml README.md ./
COPY service ./service
COPY ml ./ml
COPY workers ./workers
COPY migrations ./migrations
COPY examples ./examples
# Architecture plug-ins (docs/models.md): pip requirements, space-separated, installed next
# to unlearnd, e.g. --build-arg PLUGINS="./examples/unlearnd-example-plugin my-nets==1.2"
# (compose: UNLEARN_PLUGINS). None by default.
ARG PLUGINS=""
RUN pip install --no-deps --no-build-isolation . \
    && if [ -n "$PLUGINS" ]; then pip install $PLUGINS; fi \
    && cd / && rm -rf /src

# A fixed, unprivileged uid so the named volumes' ownership is stable across rebuilds.
RUN groupadd --system --gid 10001 unlearnd \
    && useradd --system --uid 10001 --gid unlearnd --create-home --home-dir /home/unlearnd unlearnd \
    && mkdir -p /var/lib/unlearnd /data \
    && chown unlearnd:unlearnd /var/lib/unlearnd

ENV UNLEARN_STATE_DIR=/var/lib/unlearnd \
    UNLEARN_DATA_ROOT=/data \
    HOME=/home/unlearnd

# Declared after the chown: a fresh named volume starts as a copy of this folder, owner included.
VOLUME ["/var/lib/unlearnd"]

USER unlearnd:unlearnd
WORKDIR /home/unlearnd
EXPOSE 8000

# The slim image has no curl; the standard library does the probe. Only meaningful for `serve`:
# docker-compose.yml replaces or disables it for the other roles.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["unlearnd", "serve", "--host", "0.0.0.0", "--port", "8000"]
