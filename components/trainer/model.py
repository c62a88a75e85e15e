"""The classifier: augmentation, a frozen pretrained backbone, a small head."""

from typing import Any, Dict

import tensorflow as tf
import tf_keras

from components.backbones import get_backbone

BACKBONE_LAYER = 'backbone'
AUGMENTATION_LAYER = 'augmentation'
POOLED_FEATURES_LAYER = 'pool'
DROPOUT_LAYER = 'dropout'
PROBABILITIES_LAYER = 'probabilities'


class RandomContrastUnclipped(tf_keras.__internal__.layers.BaseRandomLayer):
  """Random contrast for inputs already normalized to the backbone's range.

  Keras' RandomContrast clips its output to [0, 255], which would destroy the
  negative half of normalized images; contrast scaling around each image's
  channel mean is range-agnostic, so this applies it without clipping.
  Like every Keras augmentation layer, it is the identity outside training.
  """

  def __init__(self, factor: float, seed: int | None = None, **kwargs):
    super().__init__(seed=seed, **kwargs)
    self.factor = factor
    self.seed = seed

  def call(self, images, training=None):
    if not training or not self.factor:
      return images
    batch = tf.shape(images)[0]
    scale = self._random_generator.random_uniform(
        [batch, 1, 1, 1], 1.0 - self.factor, 1.0 + self.factor)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return (images - mean) * scale + mean

  def get_config(self):
    return {**super().get_config(), 'factor': self.factor, 'seed': self.seed}


class RandomCutout(tf_keras.__internal__.layers.BaseRandomLayer):
  """Fills one random square per image with the image's mean (Cutout, as in
  FixMatch's strong augmentation); the square's side is `size` x the image's.
  The identity outside training."""

  def __init__(self, size: float, seed: int | None = None, **kwargs):
    super().__init__(seed=seed, **kwargs)
    self.size = size
    self.seed = seed

  def call(self, images, training=None):
    if not training or not self.size:
      return images
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    side_y = tf.cast(tf.cast(height, tf.float32) * self.size, tf.int32)
    side_x = tf.cast(tf.cast(width, tf.float32) * self.size, tf.int32)
    centre = self._random_generator.random_uniform([batch, 2], 0.0, 1.0)
    top = tf.cast(centre[:, 0] * tf.cast(height, tf.float32), tf.int32) - side_y // 2
    left = tf.cast(centre[:, 1] * tf.cast(width, tf.float32), tf.int32) - side_x // 2
    rows = tf.range(height)[tf.newaxis, :, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, tf.newaxis, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + side_y)[:, None, None]) &
              (cols >= left[:, None, None]) & (cols < (left + side_x)[:, None, None]))
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(inside[..., tf.newaxis], mean, images)

  def get_config(self):
    return {**super().get_config(), 'size': self.size, 'seed': self.seed}


def augmentation_layers(config: Dict[str, Any], seed: int, magnitude: float = 1.0,
                        cutout: float = 0.0,
                        name: str = AUGMENTATION_LAYER) -> tf_keras.Sequential:
  """Keras preprocessing layers that vary training images; identity otherwise.

  `magnitude` scales every geometric and photometric range (the strong views
  of semi-supervised training use more than 1), capped where a larger range
  stops making sense; `cutout` adds `RandomCutout` of that size.
  """
  def scaled(key: str, cap: float) -> float:
    return min(config[key] * magnitude, cap)

  layers = []
  if config['horizontal_flip']:
    layers.append(tf_keras.layers.RandomFlip('horizontal', seed=seed))
  if config['rotation']:
    layers.append(tf_keras.layers.RandomRotation(scaled('rotation', 0.5), seed=seed))
  if config['zoom']:
    layers.append(tf_keras.layers.RandomZoom(scaled('zoom', 0.5), seed=seed))
  if config['translation']:
    translation = scaled('translation', 0.5)
    layers.append(tf_keras.layers.RandomTranslation(translation, translation, seed=seed))
  if config['contrast']:
    layers.append(RandomContrastUnclipped(scaled('contrast', 0.9), seed=seed))
  if cutout:
    layers.append(RandomCutout(cutout, seed=seed))
  return tf_keras.Sequential(layers, name=name)


def strong_augmentation(config: Dict[str, Any]) -> tf_keras.Sequential:
  """FixMatch's strong views: the configured augmentation at
  `semi_supervised.strong_magnitude` x its ranges, plus Cutout."""
  semi = config['semi_supervised']
  return augmentation_layers(config['augmentation'], config['training']['seed'] + 1,
                             semi['strong_magnitude'], semi['cutout'],
                             name='strong_augmentation')


def build_classifier(config: Dict[str, Any], num_classes: int,
                     input_name: str) -> tf_keras.Model:
  """Augmentation -> frozen backbone (inference-mode BatchNorm) -> pooled head."""
  model_config = config['model']
  spec = get_backbone(model_config['backbone'])
  image_size = config['image_size']
  weights = None if model_config['weights'] == 'none' else model_config['weights']
  features = spec.build(image_size, weights)
  backbone = tf_keras.Model(features.inputs, features.outputs, name=BACKBONE_LAYER)
  backbone.trainable = False

  inputs = tf_keras.Input([image_size, image_size, 3], name=input_name)
  x = augmentation_layers(config['augmentation'], config['training']['seed'])(inputs)
  # training=False keeps BatchNorm statistics frozen even when the top of the
  # backbone is unfrozen for fine-tuning.
  x = backbone(x, training=False)
  x = tf_keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES_LAYER)(x)
  x = tf_keras.layers.Dropout(model_config['dropout'], name=DROPOUT_LAYER)(x)
  outputs = tf_keras.layers.Dense(num_classes, activation='softmax',
                                  name=PROBABILITIES_LAYER)(x)
  return tf_keras.Model(inputs, outputs, name='classifier')


def feature_extractor(model: tf_keras.Model) -> tf_keras.Model:
  """Image -> pooled backbone features, through the classifier's own layers:
  called with training=True it applies the augmentation (the backbone stays
  in inference mode), so each call gives one augmented view's features."""
  return tf_keras.Model(model.inputs, model.get_layer(POOLED_FEATURES_LAYER).output,
                        name='feature_extractor')


def head(model: tf_keras.Model) -> tf_keras.Model:
  """Pooled features -> probabilities, sharing the classifier's head layers:
  training it on cached features trains the exported classifier."""
  features = tf_keras.Input(model.get_layer(POOLED_FEATURES_LAYER).output.shape[1:],
                            name='features')
  x = model.get_layer(DROPOUT_LAYER)(features)
  return tf_keras.Model(features, model.get_layer(PROBABILITIES_LAYER)(x), name='head')


def unfreeze_top(model: tf_keras.Model, num_layers: int) -> int:
  """Makes the top `num_layers` backbone layers trainable, BatchNorm excepted.

  Returns how many layers with weights became trainable.
  """
  backbone = model.get_layer(BACKBONE_LAYER)
  backbone.trainable = True
  unfrozen = 0
  for index, layer in enumerate(reversed(backbone.layers)):
    trainable = (index < num_layers and
                 not isinstance(layer, tf_keras.layers.BatchNormalization))
    layer.trainable = trainable
    unfrozen += trainable and bool(layer.weights)
  return unfrozen


def compile_classifier(model: tf_keras.Model, learning_rate: float) -> None:
  model.compile(
      optimizer=tf_keras.optimizers.Adam(learning_rate),
      loss='sparse_categorical_crossentropy',
      metrics=['accuracy'])
