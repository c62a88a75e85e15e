"""The TFLite models the RegistryPusher publishes: the float one agrees with
the SavedModel, the quantized ones are what the record says.

Reads the end-to-end run's published version (tests/conftest.py, 64-px model,
read only): `model.tflite` beside the SavedModel, fed the pixels that
`image_codec.decode_and_resize` (the Transform's decoder) makes of the bundled
sample images, must score them like `serving_default` does from their bytes;
docs/serving.md's edge example (Pillow resize) must find the same classes; the
dynamic-range and int8 models have the documented interface, the int8 one
computes in int8, and their recorded eval accuracies are recomputed here.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components import contracts
from components import example_splits
from components.registry_pusher import edge_exports, executor, tflite
from models import image_codec
from models import preprocessing
from models import signatures
from pipeline import run_summary
from registry import layout

import docs_blocks
from helpers import E2E_CLASSES, SAMPLE_DIR, artifact

IMAGES_PER_CLASS = 10


@pytest.fixture(scope='module')
def published(e2e_first_run):
  version_dir = e2e_first_run.pushed_to
  paths = [os.path.join(SAMPLE_DIR, name, file_name) for name in E2E_CLASSES
           for file_name in sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[
               :IMAGES_PER_CLASS]]
  contents = []
  for path in paths:
    with open(path, 'rb') as f:
      contents.append(f.read())
  loaded = tf.saved_model.load(version_dir)
  served = loaded.signatures[signatures.SERVING_SIGNATURE](
      **{signatures.SERVING_INPUT: tf.constant(contents)})
  return {'dir': version_dir, 'loaded': loaded, 'paths': paths, 'contents': contents,
          'reference': served['probabilities'].numpy(),
          'ood_score': served['ood_score'].numpy(), 'unknown': served['unknown'].numpy()}


def _interpreter(version_dir):
  return tf.lite.Interpreter(model_path=os.path.join(version_dir, tflite.TFLITE_FILE))


def _image_size(version_dir):
  return int(_interpreter(version_dir).get_input_details()[0]['shape'][1])


def test_version_has_a_tflite_model_with_the_documented_interface(published):
  interpreter = _interpreter(published['dir'])
  listed = interpreter.get_signature_list()
  assert listed == {signatures.PIXELS_SIGNATURE: {
      'inputs': [signatures.PIXELS_INPUT],
      'outputs': listed[signatures.PIXELS_SIGNATURE]['outputs']}}
  assert sorted(listed[signatures.PIXELS_SIGNATURE]['outputs']) == [
      'ood_score', 'probabilities', 'unknown']
  runner = interpreter.get_signature_runner(signatures.PIXELS_SIGNATURE)
  (pixels,) = runner.get_input_details().values()
  outputs = runner.get_output_details()
  probabilities = outputs['probabilities']
  assert pixels['dtype'] == np.float32 and probabilities['dtype'] == np.float32
  assert outputs['ood_score']['dtype'] == np.float32 and outputs['unknown']['dtype'] == np.bool_
  assert pixels['shape_signature'].tolist() == [-1, 64, 64, 3]  # the e2e model's size
  assert probabilities['shape_signature'].tolist() == [
      -1, len(layout.read_labels(published['dir']))]


def test_tflite_agrees_with_serving_default_on_sample_images(published):
  pixels = image_codec.decode_and_resize(
      tf.constant(published['contents']), _image_size(published['dir'])).numpy()
  runner = _interpreter(published['dir']).get_signature_runner(
      signatures.PIXELS_SIGNATURE)
  outputs = runner(**{signatures.PIXELS_INPUT: pixels})
  scores = outputs['probabilities']
  reference = published['reference']
  np.testing.assert_allclose(outputs['ood_score'], published['ood_score'], atol=1e-5)
  np.testing.assert_array_equal(outputs['unknown'], published['unknown'])
  assert scores.shape == reference.shape == (len(E2E_CLASSES) * IMAGES_PER_CLASS,
                                             len(E2E_CLASSES))
  np.testing.assert_array_equal(scores.argmax(axis=1), reference.argmax(axis=1))
  # Measured 1.2e-7 here, 6.6e-6 over all 400 sample images (10 classes):
  # float32 kernels summing in another order.
  assert np.abs(scores - reference).max() < 1e-5


def test_from_pixels_signature_is_serving_default_without_the_decoder(published):
  pixels = image_codec.decode_and_resize(
      tf.constant(published['contents']), _image_size(published['dir']))
  scores = published['loaded'].signatures[signatures.PIXELS_SIGNATURE](
      **{signatures.PIXELS_INPUT: pixels})['probabilities'].numpy()
  np.testing.assert_allclose(scores, published['reference'], atol=1e-6)


def _documented_client_agreement(function_name, published):
  """docs/serving.md's client `function_name` on the published version: its
  (class name, probability) results, and the share whose class is the
  SavedModel's."""
  results = docs_blocks.python_function(function_name)(published['paths'],
                                                        published['dir'])
  labels = layout.read_labels(published['dir'])
  expected = [labels[i] for i in published['reference'].argmax(axis=1)]
  return results, np.mean([name == want for (name, _), want in zip(results, expected)])


def test_documented_edge_client_with_pillow_resize(published):
  """docs/serving.md's Pillow example: 8-bit bilinear resize on the "device"."""
  _, agree = _documented_client_agreement('classify_tflite', published)
  # Pixels differ by up to one level from TensorFlow's resize. Measured: the
  # same top class on all 30 (396 of 400 over all sample classes).
  assert agree >= 0.9


def test_saved_model_without_pixels_signature_gets_no_tflite(tmp_path):
  module = tf.Module()
  module.serve = tf.function(lambda images: {'n': tf.size(images)},
                             input_signature=[tf.TensorSpec([None], tf.string)])
  tf.saved_model.save(module, str(tmp_path / 'model'),
                      signatures={signatures.SERVING_SIGNATURE: module.serve})
  assert edge_exports.export(str(tmp_path / 'model'), str(tmp_path / 'examples'),
                             ['a', 'b'], str(tmp_path), 0.01, 10, 10) == ([], None)
  assert not glob.glob(str(tmp_path / '*.tflite'))


# Quantized exports.

QUANTIZED = [tflite.FILES[tflite.DYNAMIC_RANGE], tflite.FILES[tflite.INT8]]


@pytest.fixture(scope='module')
def exports(published):
  return layout.read_record(published['dir'])['exports']


def _eval_split(examples_uri, image_size):
  """(float pixels, class names) of every eval example, decoded here."""
  images, names = [], []
  files = example_splits.split_files(examples_uri, contracts.EVAL_SPLIT)
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    images.append(example.features.feature[preprocessing.IMAGE_KEY].bytes_list.value[0])
    names.append(example.features.feature[preprocessing.LABEL_KEY].bytes_list.value[0].decode())
  return image_codec.decode_and_resize(tf.constant(images), image_size).numpy(), names


def test_record_lists_every_tflite_export_with_its_size(published, exports):
  models = exports['models']
  assert list(models) == [tflite.TFLITE_FILE, *QUANTIZED]
  assert [model['kind'] for model in models.values()] == [
      tflite.FLOAT, tflite.DYNAMIC_RANGE, tflite.INT8]
  for name, model in models.items():
    path = os.path.join(published['dir'], name)
    assert os.path.exists(path) == model['published'], name
    if model['published']:
      assert os.path.getsize(path) == model['bytes']
  assert models[tflite.TFLITE_FILE]['published']
  # 8-bit weights: about a quarter of the float model's 4 bytes per weight.
  for name in QUANTIZED:
    assert models[name]['bytes'] < 0.35 * models[tflite.TFLITE_FILE]['bytes']
  assert exports['image_size'] == 64 and exports['max_quantized_drop'] == 0.01


def test_quantized_exports_are_published_with_the_documented_interface(published, exports):
  """On the e2e run (3 easy classes) no quantized model lost eval accuracy."""
  labels = layout.read_labels(published['dir'])
  for name, input_dtype in zip(QUANTIZED, [np.float32, np.uint8]):
    assert exports['models'][name]['published'], exports['models'][name]['reason']
    interpreter = tf.lite.Interpreter(model_path=os.path.join(published['dir'], name))
    runner = interpreter.get_signature_runner(signatures.PIXELS_SIGNATURE)
    pixels = runner.get_input_details()[signatures.PIXELS_INPUT]
    probabilities = runner.get_output_details()['probabilities']
    assert pixels['dtype'] == input_dtype and probabilities['dtype'] == np.float32
    assert pixels['shape_signature'].tolist() == [-1, 64, 64, 3]
    assert probabilities['shape_signature'].tolist() == [-1, len(labels)]
  int8_input = tflite.Classifier(_read(published['dir'], QUANTIZED[1])).input_details
  scale, zero_point = int8_input['quantization']
  # Calibrated on pixels 0..255: q = p / scale + zero point spans uint8.
  assert 0.9 < scale * 255 / (255 - zero_point) < 1.1 and 0 <= zero_point < 16


def _read(version_dir, name):
  with open(os.path.join(version_dir, name), 'rb') as f:
    return f.read()


def test_documented_int8_client_with_pillow_resize(published):
  """docs/serving.md's int8 example: Pillow's 8-bit pixels, quantized with the
  input's scale and zero point, find the SavedModel's classes."""
  results, agree = _documented_client_agreement('classify_int8', published)
  assert agree >= 0.9
  assert all(0.0 <= probability <= 1.0 for _, probability in results)


def test_int8_model_computes_in_int8(published):
  """Every convolution and the classifier's matrix product take int8 tensors;
  float compute is left only to SIGN and SQRT of the feature normalization
  (docs/serving.md), which TFLite has no int8 kernels for."""
  model = _read(published['dir'], QUANTIZED[1])
  interpreter = tf.lite.Interpreter(
      model_content=model, experimental_op_resolver_type=(
          tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
  dtypes = {tensor['index']: tensor['dtype'] for tensor in interpreter.get_tensor_details()}
  ops = interpreter._get_ops_details()  # pylint: disable=protected-access
  heavy = [op for op in ops if op['op_name'] in (
      'CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED')]
  assert len(heavy) > 40
  for op in heavy:
    assert dtypes[op['inputs'][0]] == np.int8 and dtypes[op['inputs'][1]] == np.int8
  assert tflite.float_ops(model) == ['SIGN', 'SQRT']
  assert tflite.float_ops(_read(published['dir'], tflite.TFLITE_FILE)) != []


def test_recorded_accuracies_match_a_recomputation(published, exports, e2e_first_run):
  pixels, names = _eval_split(e2e_first_run.examples_uri, exports['image_size'])
  labels = layout.read_labels(published['dir'])
  truth = np.array([labels.index(name) for name in names])
  assert exports['eval_images'] == exports['eval_split_images'] == len(truth)
  saved = published['loaded'].signatures[signatures.PIXELS_SIGNATURE](
      **{signatures.PIXELS_INPUT: tf.constant(pixels)})['probabilities'].numpy()
  assert exports['saved_model_accuracy'] == pytest.approx(
      np.mean(saved.argmax(axis=1) == truth), abs=1e-6)
  for name, model in exports['models'].items():
    runner = tf.lite.Interpreter(
        model_content=_read(published['dir'], name)).get_signature_runner(
            signatures.PIXELS_SIGNATURE)
    details = runner.get_input_details()[signatures.PIXELS_INPUT]
    if details['dtype'] == np.uint8:    # docs/serving.md: q = round(p / scale) + zero point
      scale, zero_point = details['quantization']
      inputs = np.clip(np.round(pixels / scale) + zero_point, 0, 255).astype(np.uint8)
    else:
      inputs = pixels
    scores = runner(**{signatures.PIXELS_INPUT: inputs})['probabilities']
    accuracy = np.mean(scores.argmax(axis=1) == truth)
    assert model['accuracy'] == pytest.approx(accuracy, abs=1e-6), name
    assert model['drop'] == pytest.approx(exports['saved_model_accuracy'] - accuracy, abs=1e-6)


@pytest.mark.parametrize('drop, limit, published', [
    (0.0, 0.01, True), (0.01, 0.01, True), (-0.05, 0.0, True),
    (0.0125, 0.01, False), (0.001, 0.0, False)])
def test_verdict_publishes_a_quantized_export_within_the_limit(drop, limit, published):
  ok, reason = edge_exports.verdict(drop, limit)
  assert ok == published
  assert ('export.max_quantized_drop' in reason) and (('loses' in reason) != published)


def test_pusher_leaves_out_quantized_exports_beyond_the_limit(e2e_first_run, tmp_path):
  """The RegistryPusher's executor on the e2e run's artifacts with a limit no
  export can meet (a negative drop: it would have to gain accuracy): the
  version and its float model are published, the quantized ones are not,
  and the record says why."""
  pipeline_root = e2e_first_run.model_uri.split('/Trainer/')[0]
  # The first run's: other tests run the workspace's pipeline again later.
  transform_graph = min(glob.glob(os.path.join(pipeline_root, 'Transform', 'transform_graph',
                                               '*')), key=lambda uri: int(os.path.basename(uri)))
  blessing = artifact(standard_artifacts.ModelBlessing, str(tmp_path / 'blessing'))
  blessing.set_int_custom_property('blessed', 1)
  pushed = artifact(standard_artifacts.PushedModel, str(tmp_path / 'pushed'))
  executor.Executor().Do({
      'model': [artifact(standard_artifacts.Model, e2e_first_run.model_uri)],
      'model_blessing': [blessing],
      'evaluation': [artifact(standard_artifacts.ModelEvaluation,
                              e2e_first_run.evaluation_uri)],
      'examples': [artifact(standard_artifacts.Examples, e2e_first_run.examples_uri,
                            ['train', 'eval'])],
      'transform_graph': [artifact(standard_artifacts.TransformGraph, transform_graph)],
  }, {'pushed_model': [pushed]}, {
      'registry_dir': str(tmp_path / 'registry'), 'model_name': 'm',
      'max_quantized_drop': -1.0, 'representative_images': 10, 'score_images': 4})
  version_dir = layout.version_dir(str(tmp_path / 'registry'), 'm', 1)
  assert sorted(glob.glob(os.path.join(version_dir, '*.tflite'))) == [
      os.path.join(version_dir, tflite.TFLITE_FILE)]
  exports = layout.read_record(version_dir)['exports']
  # export.score_images: 4 of the eval images.
  assert exports['eval_images'] == 4
  assert exports['eval_split_images'] == example_splits.count_records(
      example_splits.split_files(e2e_first_run.examples_uri, contracts.EVAL_SPLIT))
  models = exports['models']
  assert models[tflite.TFLITE_FILE]['published']
  for name in QUANTIZED:
    assert not models[name]['published']
    assert 'more than export.max_quantized_drop = -1' in models[name]['reason']
  assert pushed.get_int_custom_property('pushed') == 1


def test_run_summary_names_the_published_tflite_models(e2e_first_run, exports):
  """All three on the e2e run (see the interface test above)."""
  assert (f'TFLite for devices: {", ".join(exports["models"])}' in
          run_summary.format_summary(e2e_first_run).splitlines())


def test_run_summary_names_the_quantized_models_left_out():
  line = run_summary.edge_exports_line({'max_quantized_drop': 0.01, 'models': {
      tflite.TFLITE_FILE: {'published': True, 'drop': 0.0},
      QUANTIZED[0]: {'published': True, 'drop': 0.0},
      QUANTIZED[1]: {'published': False, 'drop': 0.0375}}})
  assert line == (f'TFLite for devices: {tflite.TFLITE_FILE}, {QUANTIZED[0]}; left out, more '
                  'than export.max_quantized_drop = 0.01 below the SavedModel on the eval '
                  f'split: {QUANTIZED[1]} (-3.75 points)')
