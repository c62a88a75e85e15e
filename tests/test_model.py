"""The classifier's training-time behaviour: frozen backbone, fine-tuning, augmentation."""

import numpy as np
import tensorflow as tf
import tf_keras

from models import classifier

from helpers import model_settings

CONFIG = model_settings('model.image_size=32', 'model.weights=none',
                           'augmentation.rotation=0.1', 'augmentation.contrast=0.2',
                           'training.seed=3')


def _build():
  return classifier.build_classifier(CONFIG, 4, 'image_xf')


def test_only_the_head_trains_while_the_backbone_is_frozen():
  model = _build()
  trainable = {v.name.split('/')[0] for v in model.trainable_variables}
  assert trainable == {'probabilities'}


def test_fine_tuning_unfreezes_top_layers_but_never_batch_norm():
  model = _build()
  unfrozen = classifier.unfreeze_top(model, 12)
  backbone = model.get_layer(classifier.BACKBONE_LAYER)
  top = list(reversed(backbone.layers))[:12]
  expected = [l for l in top if l.weights and
              not isinstance(l, tf_keras.layers.BatchNormalization)]
  assert unfrozen == len(expected) > 0
  for layer in backbone.layers:
    if isinstance(layer, tf_keras.layers.BatchNormalization):
      assert not layer.trainable, layer.name
    elif layer.weights:
      assert layer.trainable == (layer in expected), layer.name


def test_augmentation_varies_training_batches_only():
  layers = classifier.augmentation_layers(CONFIG.augmentation, seed=5)
  images = tf.random.stateless_uniform([4, 32, 32, 3], seed=[1, 2], minval=-1, maxval=1)
  np.testing.assert_array_equal(layers(images, training=False), images)
  augmented = layers(images, training=True)
  assert augmented.shape == images.shape
  assert not np.allclose(augmented, images)
  # Normalized inputs keep their negative half (Keras' RandomContrast would clip).
  assert float(tf.reduce_min(augmented)) < -0.5
