# syntax=docker/dockerfile:1
# dermdl's runtime: the locked Python environment and nothing of a pipeline's state. Your clone is mounted at
# /repo (code, params and the git history experiments are recorded in), the images read-only at /data, the DVC
# cache on a volume at /cache; docker/entrypoint.sh checks that and runs the command in /repo.
# Exact build/run commands: README.md "Docker". Linted by hadolint (make lint).
#
#   docker build -t dermdl .                                   # torch's CUDA 13 build (host driver >= 580)
#   docker build -t dermdl:cpu --build-arg TORCH_FLAVOR=cpu .  # torch's CPU build, no CUDA libraries
#
# A slim Python base, not a CUDA one: the torch wheels bring their own CUDA libraries (the nvidia-* wheels in
# requirements.lock), so a CUDA base would only add a second, unused CUDA. The host needs the NVIDIA driver and
# the container toolkit, nothing else. No HEALTHCHECK: the container is a batch job whose exit status says
# whether it worked, not a service to probe.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: the venv. Everything pip may need at build time stays here.
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_FLAVOR=cuda
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The dependencies first: this slow layer is rebuilt only when the lock, pyproject.toml or the script change.
COPY pyproject.toml requirements.lock ./
COPY docker/install.sh docker/
RUN PYTHON=/opt/venv/bin/python bash docker/install.sh "$TORCH_FLAVOR"
COPY README.md ./
COPY dermdl dermdl/
RUN /opt/venv/bin/python -m pip install --no-deps --no-build-isolation .

# Runtime stage: the venv copied onto a fresh base (no pip cache, no build files), git, a non-root user.
FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_FLAVOR=cuda
# git: DVC records experiments as commits in the mounted clone. Not pinned to a Debian version (DL3008):
# Debian drops a package's old version from its archive when a security fix lands, so a pin breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
# uid 1000 is the first user on most Linux hosts, so what it writes into the clone is yours; any other uid
# works with docker run --user "$(id -u):$(id -g)". /cache is world-writable (sticky) so that a new named
# volume mounted there starts so too, whichever uid runs.
RUN useradd --uid 1000 --create-home --shell /bin/bash dermdl \
 && install -d -m 1777 /cache
COPY --from=build /opt/venv /opt/venv
COPY requirements.lock /opt/dermdl/requirements.lock
COPY docker/entrypoint.sh /usr/local/bin/dermdl-entrypoint
# PYTHONDONTWRITEBYTECODE: no __pycache__ written into the mounted clone. USER: getpass works for any --user.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    USER=dermdl \
    DERMDL_TORCH_FLAVOR=${TORCH_FLAVOR} \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 1000:1000
WORKDIR /repo
ENTRYPOINT ["dermdl-entrypoint"]
CMD ["dvc", "repro"]
