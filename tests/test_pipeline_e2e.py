"""The real pipeline end to end: TFX runners, Beam, SQLite MLMD, real model.

One session-wide workspace (tests/conftest.py) runs the pipeline three times on a tiny data set
(3 classes, small images): a first run, orchestrated by
BeamDagRunner, that must bless and push; a rerun by LocalDagRunner that must
come from the first run's cache (both runners share one MLMD store) and
publish nothing new; and a run whose model is made worse on purpose, which
the no-regression rule must refuse to bless and push.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.backbones import efficientnet_lite
from pipeline import runner
from registry import layout
import torch_pickles

from helpers import E2E_CLASSES as CLASSES
from helpers import REPO_ROOT, run_e2e_pipeline

EXPECTED_NODES = {
    'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
    'Transform', 'Trainer', 'latest_blessed_model_resolver', 'Evaluator',
    'RegistryPusher'}


def _states(summary):
  return {c.node_id: c.state for c in summary.components}


@pytest.mark.quick
def test_first_run_executes_every_component_blesses_and_pushes(e2e_first_run, e2e_workspace):
  states = _states(e2e_first_run)
  assert set(states) >= EXPECTED_NODES
  assert all(states[node] == 'COMPLETE' for node in EXPECTED_NODES), states
  assert e2e_first_run.quarantined == 0
  assert e2e_first_run.anomalies == []
  assert e2e_first_run.blessed is True
  assert e2e_first_run.evaluation['accuracy'] >= 0.6
  assert e2e_first_run.evaluation['example_count'] == 9      # 20% of 15, per class
  assert e2e_first_run.evaluation['baseline_accuracy'] is None
  assert set(e2e_first_run.evaluation['per_class']) == set(CLASSES)
  assert e2e_first_run.pushed_version == 1
  assert runner.exit_code(e2e_first_run) == runner.EXIT_PUSHED
  registry_dir = os.path.join(e2e_workspace['root'], 'outputs', 'registry')
  assert layout.versions(registry_dir, 'image_classifier') == [1]
  record = layout.read_record(e2e_first_run.pushed_to)
  assert record['data']['input_fingerprint']
  assert record['evaluation']['accuracy'] == e2e_first_run.evaluation['accuracy']
  assert layout.read_labels(e2e_first_run.pushed_to) == CLASSES


def test_pushed_model_predicts_in_a_fresh_process(e2e_first_run, e2e_workspace, tmp_path):
  not_an_image = tmp_path / 'notes.png'
  not_an_image.write_text('not a picture')
  model_dir = os.path.join(e2e_workspace['root'], 'outputs', 'registry', 'image_classifier')
  result = subprocess.run(
      [sys.executable, '-m', 'pipeline', 'predict', '--model', model_dir,
       e2e_workspace['data'], str(not_an_image)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert result.returncode == 1, result.stderr[-2000:]   # one file failed
  errors = [row for row in rows if 'error' in row]
  assert [row['path'] for row in errors] == [str(not_an_image)]
  predictions = [row for row in rows if 'error' not in row]
  assert len(predictions) == 3 * 15
  correct = sum(row['class_name'] == os.path.basename(os.path.dirname(row['path']))
                for row in predictions)
  assert correct / len(predictions) > 0.6        # chance is 1/3
  assert all(abs(sum(k['probability'] for k in row['top_k']) - 1) < 1e-3
             for row in predictions)          # top 3 of 3 classes


def test_rerun_reuses_the_cache_and_publishes_nothing_new(e2e_first_run, e2e_workspace):
  summary = run_e2e_pipeline(e2e_workspace)
  states = _states(summary)
  for node in ('ImageExampleGen', 'StatisticsGen', 'Transform', 'Trainer'):
    assert states[node] == 'CACHED', states
  registry_dir = os.path.join(e2e_workspace['root'], 'outputs', 'registry')
  assert layout.versions(registry_dir, 'image_classifier') == [1]
  assert summary.pushed_version == 1
  assert runner.exit_code(summary) == runner.EXIT_PUSHED     # already published


def test_worse_model_is_refused_by_the_no_regression_rule_alone(
    e2e_first_run, e2e_workspace, tmp_path, monkeypatch):
  """A backbone whose weights file holds only zeros (say, a botched export)
  sees every image alike, so the model guesses one class (1/3 accuracy). With
  the minimum lowered under that, only the no-regression rule
  (evaluation.max_accuracy_drop against the blessed first run) can stop it."""
  zeros = tmp_path / 'zeros.pth'
  torch_pickles.write_zip_state_dict(zeros, {
      key: np.zeros_like(value)
      for key, value in efficientnet_lite.imagenet_state_dict('efficientnet_lite0').items()},
      monkeypatch)
  summary = run_e2e_pipeline(e2e_workspace, f'model.weights={zeros}',
                             'evaluation.min_accuracy=0.2')
  assert _states(summary)['Trainer'] == 'COMPLETE'
  assert summary.blessed is False
  baseline = e2e_first_run.evaluation['accuracy']
  assert summary.evaluation['baseline_accuracy'] == baseline
  assert 0.2 <= summary.evaluation['accuracy'] < baseline - 0.05
  assert summary.evaluation['failures'] == [
      f'sparse_categorical_accuracy changed by '
      f'{summary.evaluation["accuracy"] - baseline:.4f} against the baseline; '
      'the change allowed is at least -0.0500']
  assert summary.pushed_version is None
  assert runner.exit_code(summary) == runner.EXIT_NOT_BLESSED
  registry_dir = os.path.join(e2e_workspace['root'], 'outputs', 'registry')
  assert layout.versions(registry_dir, 'image_classifier') == [1]
