# One image, two roles (the python-docs-samples "pipeline_with_dependencies" pattern):
#   * the SDK container of the workers:  --sdk_container_image=IMAGE  (Dataflow, or Flink with
#     --environment_type=DOCKER --environment_config=IMAGE): dependencies and our code preinstalled,
#     so workers install nothing at start-up;
#   * the Dataflow Flex Template launcher image (gcloud dataflow flex-template build --image IMAGE).
# Build from the repository root:  docker build -t IMAGE .   (or: gcloud builds submit --tag IMAGE .)
# The Beam version here, in requirements-worker.txt and in pyproject.toml must agree
# (tests/test_packaging.py checks it).

# The Flex Template launcher binary. Pin it (tag or @sha256 digest) for reproducible builds:
#   docker build --build-arg LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base@sha256:... .
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest
FROM ${LAUNCHER_IMAGE} AS launcher

FROM apache/beam_python3.11_sdk:2.77.0

COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /template

# 1. The pinned worker lock (exact versions the test suite ran with), without resolving again.
COPY requirements-worker.txt ./
RUN pip install --no-cache-dir --no-deps -r requirements-worker.txt

# 2. Our code (pipelines/, transforms/) as an installed package: nothing else is copied (.dockerignore).
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY pipelines ./pipelines
COPY transforms ./transforms
COPY flex ./flex
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import pipelines.import_audience, transforms.reconcile" \
    && pip check

# Flex Template: the launcher runs this file with the template's parameters (flex/import/metadata.json).
# Our package is installed above, so neither FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE nor
# FLEX_TEMPLATE_PYTHON_SETUP_FILE is needed (and submission stays fast).
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex/main.py
ENV AUDIENCE_SYNC_JOB=import

# No key material in the image: keys are resolved on the workers from env:/file:/gcpsm: references.

# As an SDK container, the image starts Beam's worker boot program.
ENTRYPOINT ["/opt/apache/beam/boot"]
