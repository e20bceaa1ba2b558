# The hpo image: PyTorch with CUDA from the official base, hpo on top, MNIST baked in (checked
# against the pinned sha256 digests at build time, so workers never download it).
# docker-compose.yml runs it as the worker (`hpo run`) and as the dashboard (`hpo dashboard`).
ARG BASE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HPO_DATA_DIR=/opt/hpo-data

WORKDIR /srv/hpo
COPY pyproject.toml README.md ./
COPY hpo ./hpo
# torch>=2.5 is already satisfied by the base image's CUDA build, so pip keeps it
RUN pip install .
# MNIST into $HPO_DATA_DIR/mnist (HPO_DATA_DIR names the data root)
RUN hpo data
# study files are looked up in ./studies; compose also mounts the checkout's folder over this copy
COPY studies ./studies
COPY configs ./configs

CMD ["hpo", "studies"]
