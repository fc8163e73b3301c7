# distilbeam worker image: the Beam Python SDK image of the Beam version distilbeam pins, with torch (a CUDA
# build by default) and distilbeam installed, so workers start without installing anything.
#
#   docker build --target worker      -t IMAGE .   # Dataflow workers (--sdk_container_image=IMAGE)
#   docker build --target worker-pool -t IMAGE .   # Beam worker pool beside Flink TaskManagers, non-root
#   docker build --target template    -t IMAGE .   # Dataflow Flex Template launcher, also a Dataflow worker
#
# Build arguments: TORCH_VERSION and TORCH_INDEX_URL, and MODELS: space-separated Hugging Face Hub ids to
# bake into the image, so that workers start with the weights on disk instead of downloading them (a config
# then names the model by its id).
#
# torch and the NVIDIA driver must agree. The default index, PyPI, serves torch 2.13.0 for Linux x86_64 built
# for CUDA 13 (with the nvidia-*-cu13 libraries), which needs a driver of the R580 branch or newer
# (580.65.06+): configs/dataflow-gpu.yaml asks Dataflow for its latest driver (install-nvidia-driver:latest).
# For workers with an older driver (R525 to R575), build a CUDA 12 torch instead:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# and for CPU-only workers: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A worker whose torch cannot use its GPU stops at model load with both versions in the error (it never
# falls back to the CPU).

# Only its launcher binary is used, by the template stage.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:20240812-rc01 AS template-launcher

FROM apache/beam_python3.11_sdk:2.77.0 AS worker

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/opt/distilbeam/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1

# Layers from the least to the most often changed: torch (the largest), pinned dependencies, distilbeam.
# The build log shows the CUDA version the torch installed was built for. What workers need beyond the base
# install: the gcs and s3 extras (gcsfs, s3fs) are pinned in docker/requirements.txt; the dataflow extra,
# Beam's gcp extra, comes with the base image (the Beam SDK image installs apache-beam[gcp,aws]).
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

WORKDIR /opt/distilbeam
COPY docker/requirements.txt docker/requirements.txt
RUN pip install --no-cache-dir -r docker/requirements.txt

COPY pyproject.toml README.md LICENSE ./
COPY pipeline pipeline
COPY transforms transforms
COPY configs configs
# --no-deps: every dependency is already here, pinned; pip check fails the build if one does not fit.
RUN pip install --no-cache-dir --no-deps . && pip check

# Models baked in at build time land in the Hugging Face cache (HF_HOME), where the pipeline looks first.
ARG MODELS=""
RUN if [ -n "${MODELS}" ]; then \
      MODELS="${MODELS}" python -c 'import os; from distilbeam.transforms.models import ModelRef, local_dir; [print(local_dir(ModelRef(m))) for m in os.environ["MODELS"].split()]'; \
    fi

# Dataflow runs the SDK container as root (it mounts its working directories owned by root), so this stage
# keeps the base image's user; the worker-pool stage below runs as this unprivileged one.
RUN useradd --no-log-init --create-home --uid 1000 distilbeam \
    && mkdir -p "${HF_HOME}" \
    && chown -R distilbeam "${HF_HOME}"

# The base image's ENTRYPOINT (/opt/apache/beam/boot) starts the SDK harness: nothing to change here.


# A Beam worker pool (port 50000) for portable runners: run it beside each Flink TaskManager and point the
# pipeline at it with --environment_type=EXTERNAL --environment_config=localhost:50000.
FROM worker AS worker-pool
USER 1000
EXPOSE 50000
ENTRYPOINT ["/opt/apache/beam/boot", "--worker_pool"]


# The Dataflow Flex Template image: the worker image plus Dataflow's launcher, which runs launch.py with the
# template's parameters. Use the same image as the job's sdk_container_image, so the launcher and the
# workers run the same code.
FROM worker AS template
COPY --from=template-launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/distilbeam/configs/flex-template/launch.py
