"""The data gate (components/data_gate/): bad data sets stop the run before
Transform with one error listing every problem; a clean one passes. (Data
outside the schema is also reported by ExampleValidator, which never stops a
run; the Trainer no longer checks classes itself.)

Each case is a real pipeline run (LocalDagRunner, SQLite MLMD, real ExampleGen
and StatisticsGen) up to DataGate on a small folder copied from the bundled
sample; the duplicate-image case runs the whole pipeline through
`runner.run_local` on BeamDagRunner, as `python -m pipeline run` would.
The unlabeled split (data.unlabeled_path) is checked by the gate alone.
"""

import io
import json
import logging
import os
import shutil

import pytest
from PIL import Image
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from components import artifact_readers
from components import contracts
from components.data_gate import executor as gate
from pipeline import __main__ as cli
from pipeline import config as config_lib
from pipeline import dag, report, run_summary, runner, schema

from helpers import copy_sample

HEADER = 'The data set cannot be used for training; the data gate found'


def _config(root, data_dir, classes, *extra, edit_schema=lambda text: text):
  schema_file = os.path.join(root, 'schema.pbtxt')
  with open(schema_file, 'w', encoding='utf-8') as f:
    f.write(edit_schema(schema.derive(config_lib.DataConfig.schema_file, classes)))
  return config_lib.load_config(None, [
      f'data.path={data_dir}', f'data.schema_file={schema_file}',
      f'pipeline.output_dir={os.path.join(root, "out")}', *extra])


def _run_to_gate(config):
  """Runs the pipeline up to DataGate; returns its DataGateError, or None."""
  try:
    tfx.orchestration.LocalDagRunner().run(
        dag.create_pipeline(config, metadata_connection_config=dag.local_metadata(config)),
        run_options=RunOptions(to_nodes=['DataGate']))
  except gate.DataGateError as error:
    return error
  return None


def _states(config):
  summary = run_summary.summarize(config.pipeline.metadata_path)
  return {c.node_id: c.state for c in summary.components}


def _gate_case(tmp_path_factory, name, classes, per_class, schema_classes, *extra):
  root = str(tmp_path_factory.mktemp(name))
  data_dir = copy_sample(os.path.join(root, 'images'), classes, per_class)
  config = _config(root, data_dir, schema_classes, *extra)
  return config, _run_to_gate(config)


def _unlabeled_case(tmp_path_factory, name, files, sneakers=3, **schema_edit):
  """bag and trouser, and an unlabeled folder: `sneakers` sample sneakers in
  a sub-folder, then `files` (name -> bytes, or a callable of the labeled
  folder giving them)."""
  root = str(tmp_path_factory.mktemp(name))
  data_dir = copy_sample(os.path.join(root, 'images'), ['bag', 'trouser'], 6)
  folder = os.path.join(root, 'unlabeled')
  copy_sample(os.path.join(root, 'pool'), ['sneaker'], sneakers)
  shutil.copytree(os.path.join(root, 'pool', 'sneaker'), os.path.join(folder, 'nested'))
  for file_name, data in (files(data_dir) if callable(files) else files).items():
    with open(os.path.join(folder, file_name), 'wb') as f:
      f.write(data)
  config = _config(root, data_dir, ['bag', 'trouser'], f'data.unlabeled_path={folder}',
                   **schema_edit)
  return config, _run_to_gate(config)


def _first_bag(data_dir):
  bag = os.path.join(data_dir, 'bag')
  with open(os.path.join(bag, sorted(os.listdir(bag))[0]), 'rb') as f:
    return {'a_bag.png': f.read()}


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
  """Clean labeled images, and 4 unlabeled ones: 3 sneakers and a labeled bag's copy."""
  return _unlabeled_case(tmp_path_factory, 'clean', _first_bag)


@pytest.fixture(scope='module')
def empty_unlabeled(tmp_path_factory):
  """The unlabeled folder holds one file, and it is no image."""
  return _unlabeled_case(tmp_path_factory, 'empty', {'notes.png': b'not an image'},
                         sneakers=0)


def _only_png(schema_text):
  for image_format in ('jpeg', 'gif', 'bmp'):
    schema_text = schema_text.replace(f'value: "{image_format}"', '')
  return schema_text


@pytest.fixture(scope='module')
def unlabeled_outside_schema(tmp_path_factory):
  """The schema allows only PNG; the unlabeled folder also holds a JPEG."""
  jpeg = io.BytesIO()
  Image.new('RGB', (28, 28), (90, 30, 200)).save(jpeg, format='JPEG')
  return _unlabeled_case(tmp_path_factory, 'outside', {'photo.jpg': jpeg.getvalue()},
                         edit_schema=_only_png)


@pytest.fixture(scope='module')
def single_class(tmp_path_factory):
  return _gate_case(tmp_path_factory, 'single', ['bag'], 6, ['bag', 'trouser'])


@pytest.fixture(scope='module')
def small_class(tmp_path_factory):
  """trouser has 3 images; the minimum is raised to 6 (bag has 8)."""
  root = str(tmp_path_factory.mktemp('small'))
  data_dir = copy_sample(os.path.join(root, 'images'), ['bag'], 8)
  copy_sample(os.path.join(root, 'images'), ['trouser'], 3)
  config = _config(root, data_dir, ['bag', 'trouser'], 'data.min_images_per_class=6')
  return config, _run_to_gate(config)


@pytest.fixture(scope='module')
def eval_missing_a_class(tmp_path_factory):
  """Fixed split: train/ has bag and trouser, eval/ only bag."""
  root = str(tmp_path_factory.mktemp('fixed'))
  data_dir = os.path.join(root, 'images')
  copy_sample(os.path.join(data_dir, 'train'), ['bag', 'trouser'], 6)
  copy_sample(os.path.join(data_dir, 'eval'), ['bag'], 2)
  config = _config(root, data_dir, ['bag', 'trouser'])
  return config, _run_to_gate(config)


@pytest.fixture(scope='module')
def unknown_label(tmp_path_factory):
  return _gate_case(tmp_path_factory, 'unknown', ['bag', 'trouser', 'coat'], 6,
                    ['bag', 'trouser'])


@pytest.fixture(scope='module')
def duplicate_run(tmp_path_factory):
  """One bag image copied into trouser/; the whole run, as the CLI does it
  (BeamDagRunner, so the error also crosses Beam's exception wrapping)."""
  root = str(tmp_path_factory.mktemp('duplicate'))
  data_dir = copy_sample(os.path.join(root, 'images'), ['bag', 'trouser'], 6)
  original = sorted(os.listdir(os.path.join(data_dir, 'bag')))[0]
  shutil.copy(os.path.join(data_dir, 'bag', original),
              os.path.join(data_dir, 'trouser', 'looks_like_a_trouser.png'))
  config = _config(root, data_dir, ['bag', 'trouser'])
  logged = []
  handler = logging.Handler(logging.ERROR)
  handler.emit = lambda record: logged.append(record.getMessage())
  logging.getLogger().addHandler(handler)
  try:
    with pytest.raises(gate.DataGateError) as raised:
      runner.run_local(config, 'beam')
  finally:
    logging.getLogger().removeHandler(handler)
  return config, raised.value, original, logged


def _assert_clear(error, expected):
  """`error` is the gate's, lists exactly `expected`, and reads as one message."""
  assert error is not None, 'the gate passed'
  text = str(error)
  assert text.startswith(f'{HEADER} {len(expected)} problem(s):\n'), text
  assert sorted(error.problems) == sorted(expected), error.problems
  assert 'Traceback' not in text and 'while running' not in text


def test_clean_data_passes_and_records_what_it_checked(clean):
  config, error = clean
  assert error is None
  assert _states(config)['DataGate'] == 'COMPLETE'
  summary = run_summary.summarize(config.pipeline.metadata_path)
  found = artifact_readers.data_gate_report(summary.data_gate_uri)
  assert found['passed'] is True and found['problems'] == [] and found['notes'] == []
  assert found['classes'] == ['bag', 'trouser']
  assert found['images_per_class'] == {'train': {'bag': 5, 'trouser': 5},
                                       'eval': {'bag': 1, 'trouser': 1}}
  assert found['counts_from'] == 'statistics'
  assert found['label_conflicts'] == []      # the bag's unlabeled copy is none
  assert found['unlabeled_images'] == 4
  assert 'Data gate: passed' in run_summary.format_summary(summary)
  # ExampleValidator skips the unlabeled split (its label '' is outside the domain).
  assert summary.anomalies == []


def test_an_empty_unlabeled_split_is_refused(empty_unlabeled):
  _, error = empty_unlabeled
  _assert_clear(error, [
      'the unlabeled folder (data.unlabeled_path) gave no images: it is empty or '
      'every file in it was quarantined (reasons in quarantine.jsonl)'])


def test_unlabeled_images_are_validated_against_the_schema(unlabeled_outside_schema):
  config, error = unlabeled_outside_schema
  _assert_clear(error, [
      "the unlabeled images do not match the schema: feature 'format': Examples "
      'contain values missing from the schema: jpeg (~25%).'])
  assert run_summary.summarize(config.pipeline.metadata_path).anomalies == []


def test_unlabeled_split_needs_its_placeholder_label_and_schema_environment():
  without_environments = schema.load(config_lib.DataConfig.schema_file)
  del without_environments.default_environment[:]
  assert gate.unlabeled_problems({'': 3, 'bag': 1}, 'not read', without_environments) == [
      "the unlabeled split holds 1 images labeled 'bag'; unlabeled images carry "
      "only the placeholder label ''",
      'the schema has no UNLABELED environment to validate the unlabeled images '
      'in; add default_environment: "LABELED", default_environment: "UNLABELED" '
      'and, in the label feature, not_in_environment: "UNLABELED" (see '
      'schema/schema.pbtxt)']


def test_a_missing_unlabeled_folder_stops_the_run_before_it_starts(tmp_path, capsys):
  missing = str(tmp_path / 'no_such_folder')
  with pytest.raises(SystemExit) as exited:
    cli.main(['run', '--unlabeled', missing, '--output', str(tmp_path / 'out')])
  assert exited.value.code == 2
  assert capsys.readouterr().err == (f'error: Unlabeled image folder {missing} does '
                                     'not exist (data.unlabeled_path, --unlabeled)\n')
  assert not os.path.exists(tmp_path / 'out')


def test_a_single_class_is_refused(single_class):
  _, error = single_class
  _assert_clear(error, [
      "fewer than two classes have training images ('bag': 5 images); "
      'a classifier needs at least two',
      "class 'trouser' has no images: its folder trouser/ is empty or missing, "
      'or every file in it was quarantined (quarantine.jsonl)'])


def test_a_class_below_the_configured_minimum_is_refused(small_class):
  _, error = small_class
  _assert_clear(error, [
      "class 'trouser' has 3 images (train 2, eval 1), fewer than "
      'data.min_images_per_class = 6'])


def test_eval_split_missing_a_class_is_refused(eval_missing_a_class):
  _, error = eval_missing_a_class
  _assert_clear(error, [
      "class 'trouser' has 6 train images but none in the eval split, so the "
      'model cannot be evaluated on it'])


def test_labels_outside_the_schema_are_named_with_their_counts(unknown_label):
  config, error = unknown_label
  _assert_clear(error, [
      "label 'coat' is not in the schema's label domain ['bag', 'trouser'] "
      '(6 images: train 5, eval 1); add it to the schema or remove its folder'])
  # ExampleValidator ran first (the gate consumes its anomalies) and reported it too.
  summary = run_summary.summarize(config.pipeline.metadata_path)
  assert any("'label'" in anomaly and 'coat' in anomaly for anomaly in summary.anomalies)
  assert 'Data anomalies found by ExampleValidator' in run_summary.format_summary(summary)
  assert _states(config)['DataGate'] == 'FAILED'


def test_an_image_under_two_labels_is_listed_with_both_paths(duplicate_run):
  config, error, original, _ = duplicate_run
  [problem] = error.problems
  assert problem.startswith('the same image (sha256 ')
  assert "is labeled 'bag' and 'trouser': " in problem
  assert problem.endswith(f'bag/{original}, trouser/looks_like_a_trouser.png')
  summary = run_summary.summarize(config.pipeline.metadata_path)
  with open(os.path.join(summary.examples_uri,
                         contracts.LABEL_CONFLICTS_FILE), encoding='utf-8') as f:
    [conflict] = [json.loads(line) for line in f]
  assert conflict['labels'] == ['bag', 'trouser']
  assert conflict['paths'] == [f'bag/{original}', 'trouser/looks_like_a_trouser.png']


def test_run_local_stops_at_the_gate_with_its_message_and_writes_the_report(duplicate_run):
  config, error, _, logged = duplicate_run
  _assert_clear(error, error.problems)
  reports = os.path.join(config.pipeline.output_dir, report.REPORTS_DIR)
  summary = run_summary.summarize(config.pipeline.metadata_path)
  path = os.path.join(reports, report.folder_name(summary.run_id), report.HTML_FILE)
  assert os.path.isfile(path)
  assert str(error).endswith(f'\nReport of the failed run: {path}')
  states = {c.node_id: c.state for c in summary.components}
  assert states['DataGate'] == 'FAILED'
  assert 'Transform' not in states and 'Trainer' not in states, states
  # The failed run's summary, logged by the runner, shows the gate's findings.
  failed = next(message for message in logged if message.startswith('The run failed'))
  assert 'Data gate FAILED: the data set cannot be used for training:' in failed
  assert f'  - {error.problems[0]}' in failed


def test_a_schema_class_without_images_names_its_folder():
  counts = {'train': {'a': 9, 'b': 1}, 'eval': {'a': 2}}
  assert gate.find_problems(['a', 'b', 'c'], counts, [], 5) == [
      "class 'b' has 1 images (train 1, eval 0), fewer than data.min_images_per_class = 5",
      "class 'c' has no images: its folder c/ is empty or missing, or every file "
      'in it was quarantined (quarantine.jsonl)',
      "class 'b' has 1 train images but none in the eval split, so the model cannot "
      'be evaluated on it']


def test_the_message_caps_each_rule_and_the_error_survives_wrapping():
  conflicts = [{'image_id': f'{i:064x}', 'labels': ['a', 'b'], 'paths': [f'a/{i}', f'b/{i}']}
               for i in range(gate.MAX_LINES_PER_RULE + 5)]
  counts = {'train': {'a': 9, 'b': 9}, 'eval': {'a': 2, 'b': 2}}
  problems = gate.find_problems(['a', 'b'], counts, conflicts, 5)
  assert len(problems) == gate.MAX_LINES_PER_RULE + 1
  assert problems[-1] == ('... and 5 more images under two labels (all in '
                          f'{contracts.DATA_GATE_REPORT_FILE})')
  original = gate.DataGateError.from_problems(problems)
  wrapped = RuntimeError(f"{original} [while running 'Run[DataGate]']")
  assert gate.DataGateError.find(wrapped).problems == problems
  assert gate.DataGateError.find(RuntimeError('unrelated')) is None
  assert gate.find_problems(['a', 'b'], counts, [], 5) == []
