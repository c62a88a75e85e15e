"""The Airflow target with a real Airflow 2 on SQLite (`make test-airflow`).

Needs .venv-airflow (requirements/airflow.lock); `make test` does not collect
this folder (pytest.ini). One Airflow home, with its own metadata database and
the repository's dags/ folder, configures the DAG for conftest's tiny e2e data
set and serves three checks: the DAG file imports without errors, its tasks and
settings are the pipeline's, and one `airflow dags test` run trains and pushes
a model to the registry.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
import pytest

from components.registry_pusher import registry

from conftest import E2E_CLASSES, REPO_ROOT

DAG_ID = 'image-classifier'
SCHEDULE = '30 2 * * 1'
TIMEZONE = 'Europe/Berlin'
# Direct upstream tasks of each task: the TFX DAG of pipeline/dag.py.
UPSTREAM = {
    'ImageExampleGen': set(),
    'ImportSchemaGen': set(),
    'latest_blessed_model_resolver': set(),
    'StatisticsGen': {'ImageExampleGen'},
    'ExampleValidator': {'StatisticsGen', 'ImportSchemaGen'},
    'DataGate': {'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator'},
    'Transform': {'ImageExampleGen', 'ImportSchemaGen', 'DataGate'},
    'Trainer': {'Transform', 'ImportSchemaGen'},
    'Evaluator': {'ImageExampleGen', 'Trainer', 'latest_blessed_model_resolver'},
    'RegistryPusher': {'Trainer', 'Evaluator', 'ImageExampleGen', 'Transform'},
}
AIRFLOW = os.path.join(os.path.dirname(sys.executable), 'airflow')


@pytest.fixture(scope='module')
def airflow_home(e2e_workspace, tmp_path_factory):
  """A migrated SQLite Airflow home whose DAG runs on the tiny e2e data set.

  The environment is set before anything imports `airflow` in this process,
  which reads its configuration once, on import.
  """
  root = tmp_path_factory.mktemp('airflow')
  overrides = [*e2e_workspace['overrides'],
               f'deploy.schedule={SCHEDULE}', f'deploy.timezone={TIMEZONE}']
  env = {
      'AIRFLOW_HOME': str(root / 'home'),
      'AIRFLOW__CORE__DAGS_FOLDER': os.path.join(REPO_ROOT, 'dags'),
      'AIRFLOW__CORE__LOAD_EXAMPLES': 'False',
      'AIRFLOW__DATABASE__SQL_ALCHEMY_CONN': f'sqlite:///{root / "airflow.db"}',
      # Importing TensorFlow and TFX takes longer than the default 30 s.
      'AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT': '600',
      'IMAGE_PIPELINE_SET': ';'.join(overrides),
  }
  with pytest.MonkeyPatch.context() as patch:
    for name, value in env.items():
      patch.setenv(name, value)
    subprocess.run([AIRFLOW, 'db', 'migrate'], check=True, capture_output=True,
                   timeout=300)
    yield {'root': root, 'output': pathlib.Path(e2e_workspace['output_dir'])}


@pytest.fixture(scope='module')
def dag_bag(airflow_home):  # pylint: disable=unused-argument
  from airflow.models import DagBag  # pylint: disable=g-import-not-at-top
  return DagBag(include_examples=False)


def test_dag_file_imports_without_errors(dag_bag):
  assert dag_bag.import_errors == {}
  assert DAG_ID in dag_bag.dag_ids


def test_tasks_dependencies_and_schedule_are_the_pipelines(dag_bag):
  dag = dag_bag.get_dag(DAG_ID)
  assert {task.task_id: task.upstream_task_ids for task in dag.tasks} == UPSTREAM
  assert dag.get_task('Evaluator').downstream_task_ids == {'RegistryPusher'}
  assert dag.timetable.summary == SCHEDULE
  assert dag.timezone.name == TIMEZONE
  assert dag.catchup is False
  assert dag.max_active_runs == 1
  assert dag.max_active_tasks == 1
  assert dag.fileloc == os.path.join(REPO_ROOT, 'dags', 'image_classifier.py')


def test_one_dag_run_trains_and_pushes_a_model(airflow_home, capsys):
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)   # the DAG file finds the repository by itself
  log_file = airflow_home['root'] / 'dags_test.log'
  start = time.monotonic()
  with open(log_file, 'w', encoding='utf-8') as log:
    result = subprocess.run(
        [AIRFLOW, 'dags', 'test', DAG_ID, '2025-01-06'], env=env,
        cwd=airflow_home['root'], stdout=log, stderr=subprocess.STDOUT,
        timeout=1800, check=False)
  seconds = time.monotonic() - start
  with capsys.disabled():
    print(f'\n`airflow dags test {DAG_ID}` took {seconds:.0f} s (log: {log_file})')
  assert result.returncode == 0, log_file.read_text()[-5000:]

  from airflow.models import DagRun  # pylint: disable=g-import-not-at-top
  [dag_run] = DagRun.find(dag_id=DAG_ID)
  states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
  assert states == dict.fromkeys(UPSTREAM, 'success')
  assert dag_run.state == 'success'

  version_dir = airflow_home['output'] / 'registry' / 'image_classifier' / '1'
  assert (version_dir / 'saved_model.pb').is_file()
  record = json.loads((version_dir / 'model_record.json').read_text())
  assert record['evaluation']['accuracy'] >= 0.6    # evaluation.min_accuracy
  assert registry.read_labels(str(version_dir)) == E2E_CLASSES

  # The TFX side: the legacy launcher Airflow uses records this run, under
  # its Airflow run id, in the SQLite ML Metadata store.
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = str(airflow_home['output'] / 'metadata.sqlite')
  store = mlmd.MetadataStore(connection)
  assert [c.name for c in store.get_contexts_by_type('run')] == [
      f'{DAG_ID}.{dag_run.run_id}']
  [blessing] = store.get_artifacts_by_type('ModelBlessing')
  assert blessing.custom_properties['blessed'].int_value == 1
  [pushed] = store.get_artifacts_by_type('PushedModel')
  assert pushed.custom_properties['pushed_version'].string_value == '1'
