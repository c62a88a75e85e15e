"""The TFLite model the RegistryPusher publishes agrees with the SavedModel.

Reads the end-to-end run's published version (tests/conftest.py, 64-px model,
read only): `model.tflite` beside the SavedModel, fed the pixels that
`image_codec.decode_and_resize` (the Transform's decoder) makes of the bundled
sample images, must score them like `serving_default` does from their bytes;
and docs/serving.md's edge example (Pillow resize) must find the same classes.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from components import image_codec
from components.registry_pusher import registry, tflite
from components.trainer import signatures

import docs_blocks
from helpers import E2E_CLASSES, SAMPLE_DIR

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
      -1, len(registry.read_labels(published['dir']))]


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


def test_documented_edge_client_with_pillow_resize(published):
  """docs/serving.md's Pillow example: 8-bit bilinear resize on the "device"."""
  classify_tflite = docs_blocks.python_function('classify_tflite')
  results = classify_tflite(published['paths'], published['dir'])
  labels = registry.read_labels(published['dir'])
  expected = [labels[i] for i in published['reference'].argmax(axis=1)]
  agree = np.mean([name == want for (name, _), want in zip(results, expected)])
  # Pixels differ by up to one level from TensorFlow's resize. Measured: the
  # same top class on all 30 (396 of 400 over all sample classes).
  assert agree >= 0.9


def test_saved_model_without_pixels_signature_gets_no_tflite(tmp_path):
  module = tf.Module()
  module.serve = tf.function(lambda images: {'n': tf.size(images)},
                             input_signature=[tf.TensorSpec([None], tf.string)])
  tf.saved_model.save(module, str(tmp_path / 'model'),
                      signatures={signatures.SERVING_SIGNATURE: module.serve})
  assert tflite.export(str(tmp_path / 'model'), str(tmp_path)) is None
  assert not (tmp_path / tflite.TFLITE_FILE).exists()
