"""The DataGate's executor alone, TFX style: real artifacts over real files
(GZIP TFRecords of tf.Examples, TFDV statistics, the schema) in a temp dir,
`Executor().Do`, and what it wrote; no pipeline run (tests/test_data_gate.py
runs the gate in pipelines, and its rules on known counts)."""

import json
import os

import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import standard_artifacts

from components import contracts
from components import example_splits
from components.data_gate import component
from components.data_gate import executor
from components.data_gate import spec
from pipeline import config as config_lib
from pipeline import schema

from helpers import artifact, input_channels, sample_bytes, write_examples_split

CLASSES = ['bag', 'trouser']
FEATURES = [contracts.IMAGE_FEATURE, contracts.LABEL_FEATURE, contracts.IMAGE_ID_FEATURE,
            'source_path', 'height', 'width', 'format']


def _features(serialized):
  """A tf.Example's single values by feature name: a row for TFDV."""
  features = tf.train.Example.FromString(serialized.numpy()).features.feature
  return {name: (features[name].int64_list.value or features[name].bytes_list.value)[0]
          for name in FEATURES}


def _gate_inputs(root, per_split, conflicts=()):
  """Examples (`per_split`: split -> label -> images; label '' for unlabeled
  images, sneakers), their TFDV statistics,
  label_conflicts.jsonl with `conflicts`, and the schema of CLASSES, as the
  gate's input artifacts."""
  examples_uri, statistics_uri = str(root / 'examples'), str(root / 'statistics')
  for split, counts in per_split.items():
    records = [(sample_bytes(label or 'sneaker', i), label, f'{label}/{i}.png')
               for label, count in counts.items() for i in range(count)]
    write_examples_split(examples_uri, split, records)
    stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame(
        [_features(example) for example in example_splits.split_records(examples_uri, split)],
        columns=FEATURES))
    os.makedirs(example_splits.split_dir(statistics_uri, split))
    with tf.io.gfile.GFile(os.path.join(example_splits.split_dir(statistics_uri, split),
                                        contracts.STATISTICS_FILE), 'wb') as f:
      f.write(stats.SerializeToString())
  with open(os.path.join(examples_uri, contracts.LABEL_CONFLICTS_FILE), 'w') as f:
    f.writelines(json.dumps(conflict) + '\n' for conflict in conflicts)
  (root / 'schema').mkdir()
  (root / 'schema' / 'schema.pbtxt').write_text(
      schema.derive(config_lib.DataConfig.schema_file, CLASSES))
  splits = list(per_split)
  return {
      spec.EXAMPLES_KEY: [artifact(standard_artifacts.Examples, examples_uri, splits)],
      spec.STATISTICS_KEY: [artifact(standard_artifacts.ExampleStatistics,
                                     statistics_uri, splits)],
      spec.SCHEMA_KEY: [artifact(standard_artifacts.Schema, str(root / 'schema'))],
  }


def _run_gate(root, per_split, min_images, conflicts=()):
  """(the result artifact, data_gate.json, the DataGateError or None)."""
  inputs = _gate_inputs(root, per_split, conflicts)
  (root / 'result').mkdir()
  result = artifact(standard_artifacts.ExampleAnomalies, str(root / 'result'))
  error = None
  try:
    executor.Executor().Do(inputs, {spec.RESULT_KEY: [result]},
                           {spec.MIN_IMAGES_PER_CLASS_KEY: min_images})
  except executor.DataGateError as raised:
    error = raised
  with open(os.path.join(result.uri, contracts.DATA_GATE_REPORT_FILE)) as f:
    return result, json.load(f), error


def test_passing_gate_writes_its_report_and_empty_anomalies_per_split(tmp_path):
  result, report, error = _run_gate(
      tmp_path, {'train': {'bag': 4, 'trouser': 3}, 'eval': {'bag': 1, 'trouser': 1}}, 3)
  assert error is None
  assert report['passed'] is True and report['problems'] == [] and report['notes'] == []
  assert report['images_per_class'] == {'train': {'bag': 4, 'trouser': 3},
                                        'eval': {'bag': 1, 'trouser': 1}}
  assert report['counts_from'] == example_splits.FROM_STATISTICS
  assert report['unlabeled_images'] is None
  for split in ('train', 'eval'):
    path = os.path.join(example_splits.split_dir(result.uri, split), contracts.ANOMALIES_FILE)
    with open(path, 'rb') as f:
      assert anomalies_pb2.Anomalies.FromString(f.read()) == anomalies_pb2.Anomalies()
  assert result.get_int_custom_property('passed') == 1
  assert result.get_int_custom_property('image_count') == 9
  assert result.get_int_custom_property('class_count') == 2


def test_a_class_below_the_minimum_fails_the_execution_and_is_reported(tmp_path):
  result, report, error = _run_gate(
      tmp_path, {'train': {'bag': 4, 'trouser': 1}, 'eval': {'bag': 1, 'trouser': 1}}, 3)
  expected = ["class 'trouser' has 2 images (train 1, eval 1), fewer than "
              'data.min_images_per_class = 3']
  assert error is not None and error.problems == expected
  assert report['passed'] is False and report['problems'] == expected
  assert result.get_int_custom_property('passed') == 0
  assert result.get_int_custom_property('problem_count') == 1
  assert not os.path.exists(example_splits.split_dir(result.uri, 'train'))


def test_an_image_under_two_labels_is_read_from_the_examples_and_refused(tmp_path):
  conflict = {'image_id': 'ab' * 32, 'labels': ['bag', 'trouser'],
              'paths': ['bag/x.png', 'trouser/x.png']}
  _, report, error = _run_gate(
      tmp_path, {'train': {'bag': 3, 'trouser': 3}, 'eval': {'bag': 1, 'trouser': 1}}, 2,
      [conflict])
  assert error is not None and len(error.problems) == 1
  assert "labeled 'bag' and 'trouser': bag/x.png, trouser/x.png" in error.problems[0]
  assert report['label_conflicts'] == [conflict]


def test_component_wires_the_spec_and_the_executor():
  gate = component.DataGate(**input_channels(spec.DataGateSpec), min_images_per_class=5)
  assert set(gate.inputs) == {spec.EXAMPLES_KEY, spec.STATISTICS_KEY, spec.SCHEMA_KEY,
                              spec.ANOMALIES_KEY}
  assert gate.outputs[spec.RESULT_KEY].type is standard_artifacts.ExampleAnomalies
  assert gate.exec_properties[spec.MIN_IMAGES_PER_CLASS_KEY] == 5
  assert gate.executor_spec.executor_class is executor.Executor


@pytest.mark.parametrize('unlabeled, problem', [
    (2, None),
    (0, 'the unlabeled folder (data.unlabeled_path) gave no images'),
], ids=['two_images', 'empty'])
def test_the_unlabeled_split_is_checked_alone_and_refused_when_empty(
    tmp_path, unlabeled, problem):
  _, report, error = _run_gate(
      tmp_path, {'train': {'bag': 3, 'trouser': 3}, 'eval': {'bag': 1, 'trouser': 1},
                 contracts.UNLABELED_SPLIT: {contracts.UNLABELED_LABEL: unlabeled}}, 2)
  assert report['unlabeled_images'] == unlabeled
  assert contracts.UNLABELED_SPLIT not in report['images_per_class']
  if problem is None:
    assert error is None and report['passed'] is True
  else:
    assert error is not None and len(error.problems) == 1
    assert error.problems[0].startswith(problem)
