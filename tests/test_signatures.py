"""The exported signatures round-trip through a real SavedModel on disk."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from models import classifier
from models import ood
from models import preprocessing
from models import signatures

from helpers import analyze_and_transform, model_settings, sample_bytes

IMAGE_SIZE = 32
CLASSES = ['bag', 'trouser']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """The signatures of a model with an unknown-image detector whose reference
  is the first class's images and whose threshold only they are under: in
  the exported model they are known and the other class's images unknown.
  ImageNet weights: a randomly initialised backbone's features are ~1e-13."""
  rows = [(sample_bytes(label, i), label) for label in CLASSES for i in range(3)]
  _, transform_dir = analyze_and_transform(rows, IMAGE_SIZE, CLASSES)
  config = model_settings(f'model.image_size={IMAGE_SIZE}', 'training.seed=1',
                             class_names=CLASSES)
  model = classifier.build_classifier(config, len(CLASSES),
                                      preprocessing.TRANSFORMED_IMAGE_KEY)
  tf_transform_output = tft.TFTransformOutput(transform_dir)
  model.tft_layer = tf_transform_output.transform_features_layer()
  images = model.tft_layer({preprocessing.IMAGE_KEY: tf.constant(
      [[image] for image, _ in rows])})[preprocessing.TRANSFORMED_IMAGE_KEY]
  features = classifier.feature_extractor(model)(images, training=False).numpy()
  classifier.head(model).get_layer(classifier.NORMALIZATION_LAYER).adapt(features)
  normalized = model.get_layer(classifier.NORMALIZATION_LAYER)(features).numpy()
  detector = ood.Detector(reference=normalized[:3], neighbours=1, threshold=1e-4)
  path = str(tmp_path_factory.mktemp('saved_model'))
  signatures.export(model, path, tf_transform_output, CLASSES, None,
                    ood.UnknownScore(detector))
  return tf.saved_model.load(path), rows


def _example(image, label=None):
  feature = {'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}
  if label is not None:
    feature['label'] = tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[label.encode()]))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def test_serving_default_takes_image_bytes(exported):
  loaded, rows = exported
  serve = loaded.signatures[signatures.SERVING_SIGNATURE]
  outputs = serve(images=tf.constant([image for image, _ in rows]))
  probabilities = outputs['probabilities'].numpy()
  assert probabilities.shape == (len(rows), len(CLASSES))
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  class_ids = outputs['class_id'].numpy()
  np.testing.assert_array_equal(class_ids, probabilities.argmax(axis=1))
  assert [n.decode() for n in outputs['class_name'].numpy()] == [
      CLASSES[i] for i in class_ids]


def test_serving_default_says_unknown_for_images_of_no_class(exported):
  loaded, rows = exported
  outputs = loaded.signatures[signatures.SERVING_SIGNATURE](
      images=tf.constant([image for image, _ in rows]))
  assert outputs['unknown'].numpy().tolist() == [False] * 3 + [True] * 3
  np.testing.assert_array_less(outputs['ood_score'].numpy()[:3], 1e-4)
  expected = [name.decode() for name in outputs['class_name'].numpy()[:3]] + [
      ood.UNKNOWN] * 3
  assert [name.decode() for name in outputs['prediction'].numpy()] == expected


@pytest.mark.parametrize('count', [0, 1, signatures.MAX_IMAGES_AT_ONCE,
                                   2 * signatures.MAX_IMAGES_AT_ONCE + 5])
def test_chunks_come_back_whole_and_in_order(count):
  """`_in_chunks` in a graph with an unknown batch size: every row once, in
  order, each chunk at most MAX_IMAGES_AT_ONCE rows."""
  def double(chunk):
    return {'y': chunk['x'] * 2, 'size': tf.fill(tf.shape(chunk['x']), tf.shape(chunk['x'])[0])}

  run = tf.function(lambda x: signatures._in_chunks(  # pylint: disable=protected-access
      double, {'x': x}, {'y': tf.TensorSpec([None], tf.int32),
                         'size': tf.TensorSpec([None], tf.int32)}),
                    input_signature=[tf.TensorSpec([None], tf.int32)])
  outputs = run(tf.range(count))
  np.testing.assert_array_equal(outputs['y'].numpy(), 2 * np.arange(count))
  assert outputs['size'].numpy().max(initial=0) <= signatures.MAX_IMAGES_AT_ONCE


def test_a_batch_larger_than_one_chunk_matches_its_images_alone(exported):
  loaded, rows = exported
  serve = loaded.signatures[signatures.SERVING_SIGNATURE]
  alone = np.concatenate([serve(images=tf.constant([image]))['probabilities'].numpy()
                          for image, _ in rows])
  count = 2 * signatures.MAX_IMAGES_AT_ONCE + len(rows) - 1
  together = serve(images=tf.constant([rows[i % len(rows)][0] for i in range(count)]))
  np.testing.assert_allclose(together['probabilities'].numpy(),
                             alone[np.arange(count) % len(rows)], atol=1e-6)
  assert together['class_name'].shape == (count,)


def test_examples_signature_agrees_and_lists_all_classes(exported):
  loaded, rows = exported
  images = [image for image, _ in rows]
  from_bytes = loaded.signatures[signatures.SERVING_SIGNATURE](
      images=tf.constant(images))
  from_examples = loaded.signatures[signatures.EXAMPLES_SIGNATURE](
      examples=tf.constant([_example(image) for image in images]))
  np.testing.assert_allclose(from_examples['probabilities'].numpy(),
                             from_bytes['probabilities'].numpy(), atol=1e-6)
  assert from_examples['all_classes'].numpy().tolist() == [
      [c.encode() for c in CLASSES]] * len(images)


def test_transform_features_signature_maps_labels_to_ids(exported):
  loaded, rows = exported
  transform = loaded.signatures[signatures.TRANSFORM_SIGNATURE]
  outputs = transform(examples=tf.constant(
      [_example(image, label) for image, label in rows]))
  assert outputs[preprocessing.TRANSFORMED_IMAGE_KEY].shape == (
      len(rows), IMAGE_SIZE, IMAGE_SIZE, 3)
  assert outputs[preprocessing.TRANSFORMED_LABEL_KEY].numpy().ravel().tolist() == [
      CLASSES.index(label) for _, label in rows]


def test_undecodable_bytes_raise_a_clear_error(exported):
  """The codec's format check refuses them before TF's decoder sees them: its
  assertion, not the decoder's error (whose text is the same)."""
  loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
      'assertion failed: [Unknown image file format. '
      'One of JPEG, PNG, GIF, BMP required.]')):
    loaded.signatures[signatures.SERVING_SIGNATURE](
        images=tf.constant([b'definitely not an image']))
