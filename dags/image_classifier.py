"""The image-classifier TFX pipeline as an Apache Airflow 2 DAG.

Airflow discovers this file in its dags folder (`[core] dags_folder`, e.g.
AIRFLOW__CORE__DAGS_FOLDER=<repo>/dags) and runs one task per TFX component,
with the dependencies of `pipeline/dag.py`, on `deploy.schedule`.

Configuration comes from the environment of the Airflow processes:
  IMAGE_PIPELINE_CONFIG  optional YAML file (sections as in pipeline/config.py)
  IMAGE_PIPELINE_SET     optional `section.key=value` overrides, separated by
                         semicolons or newlines, applied after the file
Lineage goes to the SQLite ML Metadata store under `pipeline.output_dir`;
see docs/orchestrators.md for the limits that brings. Each task runs its
component under the output folder's run lock, like `python -m pipeline run`.
"""

import functools
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
from pipeline import runner  # pylint: disable=g-import-not-at-top

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


def hold_run_lock(dag, output_dir: str) -> None:
  """Makes every task run its component under the folder's run lock
  (`runner.run_lock`, the one `pipeline run` holds for a whole run).

  Tasks run in processes of their own, so no lock can span a DAG run; one
  task at a time (max_active_tasks and max_active_runs are 1) each holds it
  for its component. A CLI run is refused while a task runs, and a task that
  finds the folder held fails at once, naming the holder: the two never write
  the metadata store, artifacts or registry at the same time.
  """
  for task in dag.tasks:
    task.python_callable = functools.partial(_locked, output_dir, task.python_callable)


def _locked(output_dir: str, run_component, **context):
  task_instance = context['ti']
  with runner.run_lock(output_dir, details={
      'orchestrator': 'airflow', 'airflow_run': task_instance.run_id,
      'airflow_task': task_instance.task_id}):
    return run_component(**context)


def build_dag():
  config = config_lib.load_config(
      os.environ.get(CONFIG_ENV) or None,
      overrides_from_env(os.environ.get(OVERRIDES_ENV, '')))
  os.makedirs(config.pipeline.output_dir, exist_ok=True)
  tfx_pipeline = dag_lib.create_local_pipeline(config)
  dag = AirflowDagRunner(AirflowPipelineConfig(
      airflow_dag_config=airflow_dag_config(config))).run(tfx_pipeline)
  hold_run_lock(dag, config.pipeline.output_dir)
  return dag


# The module-level Airflow DAG object that Airflow's DagBag collects.
image_classifier_dag = build_dag()
