# dermdl on a GPU host.
#   docker build -t dermdl .
#   docker run --gpus all -v /data/clinic:/data:ro -v "$PWD/outputs:/app/outputs" dermdl dvc exp run -S data.root=/data
#
# The base is NVIDIA's CUDA runtime; the pinned torch==2.14.1 wheel from PyPI is the CUDA build (it carries
# its CUDA libraries as nvidia-* wheels), so the host needs only the NVIDIA driver + container toolkit.
# On a CPU-only host the same image runs on the CPU.
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_BASE}

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common git make \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY dermdl ./dermdl
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install -c requirements.lock -e .
ENV PATH=/opt/venv/bin:$PATH

# The pipeline definition; a git repository is what DVC experiments are recorded in.
COPY . .
RUN git init -q 2>/dev/null; git config --global user.email dermdl@localhost \
 && git config --global user.name dermdl && git add -A && git commit -qm "dermdl image" || true

CMD ["dvc", "repro"]
