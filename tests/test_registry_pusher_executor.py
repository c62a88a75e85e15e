"""The RegistryPusher's executor alone, TFX style: real artifacts over real
files in a temp dir (the `trained` tiny SavedModel and transform graph of
tests/conftest.py, GZIP TFRecords of tf.Examples, a ModelBlessing),
`Executor().Do`, and what the registry and the PushedModel say; no pipeline
run (tests/test_tflite.py runs it, with its TFLite exports, on the end-to-end
run's artifacts)."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_analysis.proto import metrics_for_slice_pb2
from tensorflow_model_analysis.proto import validation_result_pb2
from tfx.types import standard_artifacts

from components.evaluator import eval_config

from components.registry_pusher import component
from components.registry_pusher import edge_exports
from components.registry_pusher import executor
from components.registry_pusher import spec
from registry import layout

from helpers import TRAINED_CLASSES, artifact, input_channels, sample_bytes, write_examples_split

MODEL_NAME = 'classifier'
ACCURACY = 0.75


def _write_evaluation(uri):
  """What the Evaluator writes, reduced to what the record reads: the overall
  slice's accuracy (TFMA's metrics file) and its verdict (validations file)."""
  os.makedirs(uri)
  metrics = metrics_for_slice_pb2.MetricsForSlice(slice_key=metrics_for_slice_pb2.SliceKey())
  accuracy = metrics.metric_keys_and_values.add()
  accuracy.key.name = eval_config.ACCURACY
  accuracy.value.double_value.value = ACCURACY
  with tf.io.TFRecordWriter(os.path.join(uri, 'metrics.tfrecord')) as writer:
    writer.write(metrics.SerializeToString())
  with tf.io.TFRecordWriter(os.path.join(uri, 'validations.tfrecord')) as writer:
    writer.write(validation_result_pb2.ValidationResult(
        validation_ok=True).SerializeToString())
  return uri


def _inputs(trained, root, blessed):
  """The pusher's inputs: the tiny model, its blessing, its evaluation, and
  train/eval examples of its classes."""
  model_uri, transform_dir = trained
  blessing = artifact(standard_artifacts.ModelBlessing, str(root / 'blessing'))
  blessing.set_int_custom_property('blessed', int(blessed))
  examples_uri = str(root / 'examples')
  for split, first in (('train', 0), ('eval', 2)):
    write_examples_split(examples_uri, split, [
        (sample_bytes(label, i), label, f'{label}/{i}.png')
        for label in TRAINED_CLASSES for i in range(first, first + 2)])
  return {
      spec.MODEL_KEY: [artifact(standard_artifacts.Model, model_uri)],
      spec.MODEL_BLESSING_KEY: [blessing],
      spec.EVALUATION_KEY: [artifact(standard_artifacts.ModelEvaluation,
                                     _write_evaluation(str(root / 'evaluation')))],
      spec.EXAMPLES_KEY: [artifact(standard_artifacts.Examples, examples_uri,
                                   ['train', 'eval'])],
      spec.TRANSFORM_GRAPH_KEY: [artifact(standard_artifacts.TransformGraph,
                                          transform_dir)],
  }


def _push(inputs, root, registry_dir):
  pushed = artifact(standard_artifacts.PushedModel, str(root / 'pushed'))
  executor.Executor().Do(inputs, {spec.PUSHED_MODEL_KEY: [pushed]}, {
      spec.REGISTRY_DIR_KEY: registry_dir, spec.MODEL_NAME_KEY: MODEL_NAME,
      spec.MAX_QUANTIZED_DROP_KEY: 1.0, spec.REPRESENTATIVE_IMAGES_KEY: 4,
      spec.SCORE_IMAGES_KEY: 4})
  return pushed


def test_sampled_eval_images_take_the_classes_in_turn_in_file_order(tmp_path):
  """export.score_images and representative_images: the first image of each
  class, then the second, ..., read back in file order with their labels."""
  examples_uri = str(tmp_path / 'examples')
  records = [(sample_bytes(label, i), label, f'{label}/{i}.png')
             for label, count in (('bag', 3), ('sneaker', 1), ('trouser', 2))
             for i in range(count)]
  write_examples_split(examples_uri, 'eval', records)
  sampled, size, batches = edge_exports.sampled_batches(examples_uri, 'eval', 4)
  assert (sampled, size) == (4, 6)
  images, labels = (np.concatenate(column) for column in zip(*batches))
  assert labels.tolist() == [b'bag', b'bag', b'sneaker', b'trouser']
  assert images.tolist() == [records[i][0] for i in (0, 1, 3, 4)]
  assert edge_exports.sampled_batches(examples_uri, 'eval', 100)[:2] == (6, 6)


def test_a_model_not_blessed_is_marked_not_pushed_and_nothing_is_published(tmp_path):
  """Decided before the model is read: a model folder without a model will do."""
  unread = (str(tmp_path / 'model'), str(tmp_path / 'transform_graph'))
  pushed = _push(_inputs(unread, tmp_path, blessed=False), tmp_path,
                 str(tmp_path / 'registry'))
  assert pushed.get_int_custom_property('pushed') == 0
  assert layout.versions(str(tmp_path / 'registry'), MODEL_NAME) == []


@pytest.fixture(scope='module')
def published(trained, tmp_path_factory):
  """A blessed model pushed to an empty registry, then pushed again."""
  root = tmp_path_factory.mktemp('push')
  registry_dir = str(root / 'registry')
  inputs = _inputs(trained, root, blessed=True)
  first = _push(inputs, root / 'first', registry_dir)
  again = _push(inputs, root / 'again', registry_dir)
  return registry_dir, first, again


def test_a_blessed_model_is_published_as_a_version_with_its_record(trained, published):
  registry_dir, first, _ = published
  version_dir = layout.version_dir(registry_dir, MODEL_NAME, 1)
  assert first.get_int_custom_property('pushed') == 1
  assert first.get_string_custom_property('pushed_version') == '1'
  assert first.get_string_custom_property('pushed_destination') == version_dir
  assert layout.read_labels(version_dir) == TRAINED_CLASSES
  record = layout.read_record(version_dir)
  assert record[layout.MODEL_URI_KEY] == trained[0]
  assert record['data']['examples_uri'].endswith('examples')
  assert record['evaluation']['accuracy'] == ACCURACY
  assert record['evaluation']['blessed'] is True
  assert os.path.isfile(os.path.join(version_dir, 'saved_model.pb'))
  # No `from_pixels` signature, so no TFLite export (tests/test_tflite.py
  # checks them on the end-to-end run's model).
  assert record['exports'] is None
  assert not glob.glob(os.path.join(version_dir, '*.tflite'))


def test_the_same_model_pushed_again_reuses_its_version(published):
  registry_dir, first, again = published
  assert layout.versions(registry_dir, MODEL_NAME) == [1]
  assert again.get_int_custom_property('pushed') == 1
  assert again.get_string_custom_property('pushed_version') == '1'
  assert (again.get_string_custom_property('pushed_destination') ==
          first.get_string_custom_property('pushed_destination'))


def test_component_wires_the_pushers_standard_keys_and_the_executor():
  pusher = component.RegistryPusher(
      **input_channels(spec.RegistryPusherSpec), registry_dir='/r', model_name='m',
      max_quantized_drop=0.01, representative_images=8, score_images=16)
  assert set(pusher.inputs) == {spec.MODEL_KEY, spec.MODEL_BLESSING_KEY, spec.EVALUATION_KEY,
                                spec.EXAMPLES_KEY, spec.TRANSFORM_GRAPH_KEY}
  assert pusher.outputs[spec.PUSHED_MODEL_KEY].type is standard_artifacts.PushedModel
  assert pusher.exec_properties == {
      spec.REGISTRY_DIR_KEY: '/r', spec.MODEL_NAME_KEY: 'm',
      spec.MAX_QUANTIZED_DROP_KEY: 0.01, spec.REPRESENTATIVE_IMAGES_KEY: 8,
      spec.SCORE_IMAGES_KEY: 16}
  assert pusher.executor_spec.executor_class is executor.Executor
