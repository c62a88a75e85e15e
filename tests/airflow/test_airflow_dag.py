"""The Airflow target with a real Airflow 2 on SQLite (`make test-airflow`).

Needs .venv-airflow (requirements/airflow.lock); `make test` does not collect
this folder (pytest.ini). One Airflow home, with its own metadata database and
the repository's dags/ folder, configures the DAG for conftest's tiny e2e data
set and serves these checks: the DAG file imports without errors (with a cron
that YAML would misread), its tasks and settings are the pipeline's, a task and
a CLI run refuse each other the output folder, and one `airflow dags test` run
trains and pushes a model to the registry.
"""

import json
import os
import pathlib
import subprocess
import sys
import time
import types

import pytest

from tfx.orchestration.launcher import base_component_launcher

from pipeline import config as config_lib
from pipeline import dag as dag_lib
from pipeline import metadata
from pipeline import runner
from registry import layout

from helpers import E2E_CLASSES, REPO_ROOT

DAG_ID = 'image-classifier'
# Unquoted in IMAGE_PIPELINE_SET: YAML would read the leading * as an alias.
SCHEDULE = '*/30 2 * * 1'
TIMEZONE = 'Europe/Berlin'
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
    yield {'root': root, 'output': pathlib.Path(e2e_workspace['output_dir']),
           'overrides': overrides}


@pytest.fixture(scope='module')
def upstream(airflow_home):
  """Direct upstream components of each component: the TFX DAG of
  pipeline/dag.py, built from the same config as the Airflow DAG."""
  tfx_pipeline = dag_lib.create_pipeline(
      config_lib.load_config(None, airflow_home['overrides']))
  return {c.id: {node.id for node in c.upstream_nodes} for c in tfx_pipeline.components}


@pytest.fixture(scope='module')
def dag_bag(airflow_home):  # pylint: disable=unused-argument
  from airflow.models import DagBag  # pylint: disable=g-import-not-at-top
  return DagBag(include_examples=False)


def test_dag_file_imports_without_errors(dag_bag):
  assert dag_bag.import_errors == {}
  assert DAG_ID in dag_bag.dag_ids


def test_tasks_dependencies_and_schedule_are_the_pipelines(dag_bag, upstream):
  dag = dag_bag.get_dag(DAG_ID)
  assert {task.task_id: task.upstream_task_ids for task in dag.tasks} == upstream
  # What the order must guarantee, whatever else the pipeline gains.
  assert dag.get_task('Transform').upstream_task_ids >= {'DataGate'}
  assert dag.get_task('Evaluator').upstream_task_ids >= {
      'Trainer', 'latest_blessed_model_resolver'}
  assert dag.get_task('Evaluator').downstream_task_ids == {'RegistryPusher'}
  assert dag.get_task('LabelQueue').upstream_task_ids >= {'Trainer'}   # unlabeled pool
  assert dag.timetable.summary == SCHEDULE
  assert dag.timezone.name == TIMEZONE
  assert dag.catchup is False
  assert dag.max_active_runs == 1
  assert dag.max_active_tasks == 1
  assert dag.fileloc == os.path.join(REPO_ROOT, 'dags', 'image_classifier.py')


def _run_task(dag_bag, task_id, run_id):
  """Calls a task's callable as its PythonOperator does, with the context
  the component launcher reads."""
  task = dag_bag.get_dag(DAG_ID).get_task(task_id)
  task_instance = types.SimpleNamespace(
      run_id=run_id, task_id=task_id,
      get_dagrun=lambda: types.SimpleNamespace(run_id=run_id))
  task.python_callable(ti=task_instance, **task.op_kwargs)


def test_a_task_is_refused_while_a_cli_run_holds_the_folder(
    dag_bag, airflow_home, monkeypatch):
  launched = []
  monkeypatch.setattr(base_component_launcher.BaseComponentLauncher, 'launch',
                      lambda launcher: launched.append(launcher.__class__))
  # The lock `pipeline run` holds for its whole run.
  with runner.run_lock(str(airflow_home['output'])):
    with pytest.raises(runner.RunLockedError, match=f'another run \\(pid {os.getpid()} '):
      _run_task(dag_bag, 'ImportSchemaGen', 'manual__while_cli_runs')
  assert not launched
  _run_task(dag_bag, 'ImportSchemaGen', 'manual__after_cli_run')
  assert len(launched) == 1


def test_a_cli_run_is_refused_while_a_task_runs(dag_bag, airflow_home, monkeypatch):
  results = []

  def cli_run(launcher):  # the task's component: as long as `pipeline run` takes
    del launcher
    args = [arg for override in airflow_home['overrides'] for arg in ('--set', override)]
    results.append(subprocess.run([sys.executable, '-m', 'pipeline', 'run', *args],
                                  cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=600, check=False))
  monkeypatch.setattr(base_component_launcher.BaseComponentLauncher, 'launch', cli_run)
  _run_task(dag_bag, 'ImportSchemaGen', 'manual__lock_test')
  [result] = results
  assert result.returncode == 2, result.stderr[-3000:]
  [error] = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert error.startswith('error: another run (pid ')
  assert 'Airflow run manual__lock_test task ImportSchemaGen' in error
  assert not (airflow_home['output'] / 'metadata.sqlite').exists()   # nothing ran


def test_one_dag_run_trains_and_pushes_a_model(airflow_home, upstream, capsys):
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
  assert states == dict.fromkeys(upstream, 'success')
  assert dag_run.state == 'success'
  # Every task took the run lock; the last one's details are still in its file.
  holder = json.loads((airflow_home['output'] / runner.RUN_LOCK_FILE).read_text())
  assert holder['airflow_run'] == dag_run.run_id
  assert holder['airflow_task'] in {'RegistryPusher', 'LabelQueue'}

  version_dir = airflow_home['output'] / 'registry' / 'image_classifier' / '1'
  assert (version_dir / 'saved_model.pb').is_file()
  record = json.loads((version_dir / 'model_record.json').read_text())
  assert record['evaluation']['accuracy'] >= 0.6    # evaluation.min_accuracy
  assert layout.read_labels(str(version_dir)) == E2E_CLASSES

  # The TFX side: the legacy launcher Airflow uses records this run, under
  # its Airflow run id, in the SQLite ML Metadata store.
  store = metadata.open_store(str(airflow_home['output'] / 'metadata.sqlite'))
  assert [c.name for c in store.get_contexts_by_type('run')] == [
      f'{DAG_ID}.{dag_run.run_id}']
  [blessing] = store.get_artifacts_by_type('ModelBlessing')
  assert blessing.custom_properties['blessed'].int_value == 1
  [pushed] = store.get_artifacts_by_type('PushedModel')
  assert pushed.custom_properties['pushed_version'].string_value == '1'
