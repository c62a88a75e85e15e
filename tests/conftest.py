"""Shared fixtures and collection hooks; Keras 2 before TensorFlow, and the repo
root and tests/helpers.py importable."""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import pytest  # pylint: disable=g-import-not-at-top

from helpers import (REPO_ROOT, make_e2e_workspace, run_e2e_pipeline,  # pylint: disable=g-import-not-at-top
                     train_tiny_model)

if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope='session')
def e2e_workspace(tmp_path_factory):
  return make_e2e_workspace(tmp_path_factory.mktemp('e2e'))


@pytest.fixture(scope='session')
def e2e_first_run(e2e_workspace):
  """The first run (BeamDagRunner): blessed and published as version 1."""
  return run_e2e_pipeline(e2e_workspace, orchestrator='beam')


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """(model URI, transform graph folder) of helpers.train_tiny_model: what the
  LabelQueue and the RegistryPusher read, without a Trainer run."""
  model_uri = str(tmp_path_factory.mktemp('model'))
  return model_uri, train_tiny_model(model_uri)


# Modules whose own fixtures run several real components, through a TFX
# runner or executor by executor (minutes each, like the first run).
PIPELINE_MODULES = ('test_data_gate.py', 'test_multiprocessing.py',
                    'test_backbone_features_executor.py')
# The xdist group of every test that uses the first run.
FIRST_RUN_GROUP = 'e2e'
# The xdist group of every other test that uses the tiny trained model, so it
# is built once per run (tens of seconds on a loaded machine).
TRAINED_GROUP = 'trained'


# tryfirst: before pytest-xdist's own hook, which reads the groups.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """Marks `pipeline` (pytest.ini) every test that needs the first run or sits
  in PIPELINE_MODULES, so that `make test-quick` can leave them out.

  For the two workers of `make test` (pytest-xdist, --dist loadgroup), tests
  that share a costly set-up share a group, which one worker runs: every user
  of the first run (a session fixture) in one group, every other user of the
  tiny trained model (another) in one, each fault test alone
  (each runs pipelines of its own), else a module's tests in one (its module
  fixtures). Groups that run pipelines start first (`_start_order`; the
  Makefile's --no-loadscope-reorder keeps this order), so the short ones fill
  the workers' tails."""
  for item in items:
    shares_first_run = 'e2e_first_run' in getattr(item, 'fixturenames', ())
    if shares_first_run or item.path.name in PIPELINE_MODULES:
      item.add_marker(pytest.mark.pipeline)
    if shares_first_run:
      group = FIRST_RUN_GROUP
    elif 'trained' in getattr(item, 'fixturenames', ()):
      group = TRAINED_GROUP
    elif item.get_closest_marker('faults'):
      group = item.name
    else:
      group = item.path.stem
    item.add_marker(pytest.mark.xdist_group(group))
  items.sort(key=_start_order)


def _start_order(item) -> int:
  """The first run's group (the largest) first, then the other groups that run
  pipelines, then the rest."""
  if item.get_closest_marker('xdist_group').args[0] == FIRST_RUN_GROUP:
    return 0
  return 1 if item.get_closest_marker('pipeline') or item.get_closest_marker('faults') else 2
