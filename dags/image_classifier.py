"""The image-classifier TFX pipeline as an Apache Airflow 2 DAG.

Airflow discovers this file in its dags folder (`[core] dags_folder`, e.g.
AIRFLOW__CORE__DAGS_FOLDER=<repo>/dags) and runs one task per TFX component,
with the dependencies of `pipeline/dag.py`, on `deploy.schedule`.

Configuration comes from the environment of the Airflow processes:
  IMAGE_PIPELINE_CONFIG  optional YAML file (sections as in pipeline/config.py)
  IMAGE_PIPELINE_SET     optional `section.key=value` overrides, separated by
                         semicolons or newlines, applied after the file
Lineage goes to the SQLite ML Metadata store under `pipeline.output_dir`;
see docs/orchestrators.md for the limits that brings.
"""

import os
import sys

# The repository root holds the `pipeline` and `components` packages; Airflow
# only puts the dags folder itself on sys.path.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# `pipeline` first: it selects Keras 2 before anything imports TensorFlow.
from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
from pipeline import dag as dag_lib  # pylint: disable=g-import-not-at-top

import pendulum  # pylint: disable=g-import-not-at-top
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner  # pylint: disable=g-import-not-at-top
from tfx.orchestration.airflow.airflow_dag_runner import AirflowPipelineConfig  # pylint: disable=g-import-not-at-top

CONFIG_ENV = 'IMAGE_PIPELINE_CONFIG'
OVERRIDES_ENV = 'IMAGE_PIPELINE_SET'
# Scheduled runs start after this date; with catchup off, Airflow never
# back-fills the intervals before now.
START_DATE = (2024, 1, 1)


def overrides_from_env(raw: str) -> list:
  """`a.b=1; c.d=x` or one override per line -> ['a.b=1', 'c.d=x']."""
  return [item.strip() for line in raw.splitlines() for item in line.split(';')
          if item.strip()]


def airflow_dag_config(config: config_lib.Config) -> dict:
  """The Airflow DAG arguments: schedule, no back-fill, no overlapping runs."""
  return {
      'schedule': config.deploy.schedule,
      'start_date': pendulum.datetime(*START_DATE, tz=config.deploy.timezone),
      'catchup': False,
      'max_active_runs': 1,
      # The SQLite ML Metadata store takes one writer at a time.
      'max_active_tasks': 1,
      'description': 'Image classifier: TFX training, quality gate and registry push',
      'tags': ['tfx', 'image-classifier'],
  }


def build_dag():
  config = config_lib.load_config(
      os.environ.get(CONFIG_ENV) or None,
      overrides_from_env(os.environ.get(OVERRIDES_ENV, '')))
  os.makedirs(config.pipeline.output_dir, exist_ok=True)
  tfx_pipeline = dag_lib.create_pipeline(
      config, metadata_connection_config=dag_lib.local_metadata(config))
  return AirflowDagRunner(AirflowPipelineConfig(
      airflow_dag_config=airflow_dag_config(config))).run(tfx_pipeline)


# The module-level Airflow DAG object that Airflow's DagBag collects.
image_classifier_dag = build_dag()
