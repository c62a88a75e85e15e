"""The quality gate against a model that learned nothing: trained on the
end-to-end data with its labels shuffled across the class folders, it must not
be blessed, nothing is pushed, and the registry (versions, `latest`, aliases)
is unchanged.

(tests/test_pipeline_e2e.py covers the other bad candidate: a model trained
to be worse on the same data.) The run uses the session's workspace
(tests/conftest.py): its ML Metadata store, so the Evaluator's baseline is the
blessed model of the first run. It reads the shared data folder and registry
but writes neither: the shuffled images are a copy, and the run publishes to a
hard-linked copy of the registry with an alias set, which must come out as it
went in; the shared registry is checked unchanged too.
"""

import hashlib
import os
import random
import shutil

from pipeline import runner
from registry import Registry

from helpers import E2E_CLASSES, run_e2e_pipeline

MODEL = 'image_classifier'
SEED = 20261128


def _tree(folder):
  """Every file under `folder`: relative path -> sha256 of its bytes."""
  found = {}
  for directory, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return found


def _shuffled_copy(data_dir, destination):
  """The same files, each under a label drawn by a seeded permutation of all
  labels (class sizes unchanged); returns the share of files relabeled."""
  files = [(label, name) for label in E2E_CLASSES
           for name in sorted(os.listdir(os.path.join(data_dir, label)))]
  labels = [label for label, _ in files]
  random.Random(SEED).shuffle(labels)
  for (label, name), new_label in zip(files, labels):
    os.makedirs(os.path.join(destination, new_label), exist_ok=True)
    shutil.copy(os.path.join(data_dir, label, name), os.path.join(destination, new_label, name))
  return sum(old != new for (old, _), new in zip(files, labels)) / len(files)


def _state(registry):
  return (registry.version_numbers(), registry.latest().version,
          {name: (state['version'], len(state['history']))
           for name, state in registry.aliases().items()})


def test_a_model_trained_on_shuffled_labels_is_not_blessed_nor_pushed(
    e2e_first_run, e2e_workspace, tmp_path):
  shared_data = _tree(e2e_workspace['data'])
  shared_registry_dir = os.path.join(e2e_workspace['output_dir'], 'registry')
  shared_registry = _tree(shared_registry_dir)
  registry_dir = str(tmp_path / 'registry')
  shutil.copytree(shared_registry_dir, registry_dir, copy_function=os.link)
  registry = Registry(registry_dir, MODEL)
  registry.promote('production', 'latest', reason='the version in service')
  before = _state(registry)
  assert before[0] and before[2] == {'production': (before[1], 1)}

  shuffled = str(tmp_path / 'shuffled')
  assert _shuffled_copy(e2e_workspace['data'], shuffled) > 0.5
  summary = run_e2e_pipeline(e2e_workspace, f'data.path={shuffled}',
                             f'pipeline.registry_dir={registry_dir}')

  states = {c.node_id: c.state for c in summary.components}
  assert states['DataGate'] == 'COMPLETE' and states['Trainer'] == 'COMPLETE', states
  assert summary.model_uri != e2e_first_run.model_uri
  assert summary.blessed is False
  evaluation = summary.evaluation
  assert evaluation['accuracy'] < 0.6           # evaluation.min_accuracy; chance is 1/3
  assert evaluation['baseline_accuracy'] is not None   # compared with the blessed model
  assert any(failure.startswith('sparse_categorical_accuracy ') and
             'below the minimum' in failure for failure in evaluation['failures'])
  assert summary.pushed_version is None and summary.pushed_to is None
  assert runner.exit_code(summary) == runner.EXIT_NOT_BLESSED
  assert _state(registry) == before
  assert _tree(shared_registry_dir) == shared_registry
  assert _tree(e2e_workspace['data']) == shared_data
