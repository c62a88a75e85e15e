"""The classifier: augmentation, a frozen pretrained backbone, a small head."""

from typing import Any, Dict

import tensorflow as tf
import tf_keras

from components.backbones import get_backbone

BACKBONE_LAYER = 'backbone'


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


def augmentation_layers(config: Dict[str, Any], seed: int) -> tf_keras.Sequential:
  """Keras preprocessing layers that vary training images; identity otherwise."""
  layers = []
  if config['horizontal_flip']:
    layers.append(tf_keras.layers.RandomFlip('horizontal', seed=seed))
  if config['rotation']:
    layers.append(tf_keras.layers.RandomRotation(config['rotation'], seed=seed))
  if config['zoom']:
    layers.append(tf_keras.layers.RandomZoom(config['zoom'], seed=seed))
  if config['translation']:
    layers.append(tf_keras.layers.RandomTranslation(
        config['translation'], config['translation'], seed=seed))
  if config['contrast']:
    layers.append(RandomContrastUnclipped(config['contrast'], seed=seed))
  return tf_keras.Sequential(layers, name='augmentation')


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
  x = tf_keras.layers.GlobalAveragePooling2D(name='pool')(x)
  x = tf_keras.layers.Dropout(model_config['dropout'], name='dropout')(x)
  outputs = tf_keras.layers.Dense(num_classes, activation='softmax',
                                  name='probabilities')(x)
  return tf_keras.Model(inputs, outputs, name='classifier')


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
