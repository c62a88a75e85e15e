"""The classifier: augmentation, a frozen pretrained backbone, a linear head
on normalised features."""

import numpy as np
import tensorflow as tf
import tf_keras

from models.backbones import get_backbone
from models.settings import ModelSettings
from pipeline.config import AugmentationConfig

BACKBONE_LAYER = 'backbone'
AUGMENTATION_LAYER = 'augmentation'
POOLED_FEATURES_LAYER = 'pool'
NORMALIZATION_LAYER = 'normalized_features'
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


class FeatureNormalization(tf_keras.layers.Layer):
  """Pooled backbone features -> signed square root, centred, unit length.

  The few-shot normalisation of frozen features (the power transform of
  Hu et al. 2021, "PT-MAP"; centring and L2 of Wang et al. 2019, "SimpleShot"):
  the square root evens out a few dominant channels, centring on the run's
  mean feature removes what every image shares, and unit length leaves a
  linear head only the direction to learn from. `adapt` sets the centre from
  features, like Keras' `Normalization`; the centre is a weight, so it is
  exported with the model. The epsilon keeps the gradient finite at 0 when
  the backbone is fine-tuned.
  """

  def build(self, input_shape):
    self.center = self.add_weight(name='center', shape=[input_shape[-1]],
                                  initializer='zeros', trainable=False)
    super().build(input_shape)

  @staticmethod
  def _power(features):
    return tf.sign(features) * tf.sqrt(tf.abs(features) + 1e-6)

  def adapt(self, features: np.ndarray) -> None:
    if not self.built:
      self.build(features.shape)
    self.center.assign(tf.reduce_mean(self._power(tf.constant(features)), axis=0))

  def call(self, features):
    return tf.math.l2_normalize(self._power(features) - self.center, axis=-1)


def augmentation_layers(config: AugmentationConfig, seed: int) -> tf_keras.Sequential:
  """Keras preprocessing layers that vary training images; identity otherwise."""
  layers = []
  if config.horizontal_flip:
    layers.append(tf_keras.layers.RandomFlip('horizontal', seed=seed))
  if config.rotation:
    layers.append(tf_keras.layers.RandomRotation(config.rotation, seed=seed))
  if config.zoom:
    layers.append(tf_keras.layers.RandomZoom(config.zoom, seed=seed))
  if config.translation:
    translation = config.translation
    layers.append(tf_keras.layers.RandomTranslation(translation, translation, seed=seed))
  if config.contrast:
    layers.append(RandomContrastUnclipped(config.contrast, seed=seed))
  return tf_keras.Sequential(layers, name=AUGMENTATION_LAYER)


def build_classifier(settings: ModelSettings, num_classes: int,
                     input_name: str) -> tf_keras.Model:
  """Augmentation -> frozen backbone (inference-mode BatchNorm) -> pooling ->
  feature normalisation -> softmax."""
  spec = get_backbone(settings.model.backbone)
  image_size = settings.image_size
  weights = None if settings.model.weights == 'none' else settings.model.weights
  features = spec.build(image_size, weights)
  backbone = tf_keras.Model(features.inputs, features.outputs, name=BACKBONE_LAYER)
  backbone.trainable = False

  inputs = tf_keras.Input([image_size, image_size, 3], name=input_name)
  x = augmentation_layers(settings.augmentation, settings.training.seed)(inputs)
  # training=False keeps BatchNorm statistics frozen even when the top of the
  # backbone is unfrozen for fine-tuning.
  x = backbone(x, training=False)
  x = tf_keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES_LAYER)(x)
  return tf_keras.Model(inputs, _head_layers(num_classes, x), name='classifier')


def _head_layers(num_classes: int, features: tf.Tensor) -> tf.Tensor:
  """Feature normalisation -> softmax over `features`, under the layer names
  head.fit_head looks up."""
  x = FeatureNormalization(name=NORMALIZATION_LAYER)(features)
  return tf_keras.layers.Dense(num_classes, activation='softmax',
                               name=PROBABILITIES_LAYER)(x)


def standalone_head(dimensions: int, num_classes: int) -> tf_keras.Model:
  """The classifier's head alone, on features of any width: to fit and score
  heads on precomputed features (the label-efficiency benchmark, tests)."""
  features = tf_keras.Input([dimensions], name='features')
  return tf_keras.Model(features, _head_layers(num_classes, features), name='head')


def feature_extractor(model: tf_keras.Model) -> tf_keras.Model:
  """Image -> pooled backbone features, through the classifier's own layers:
  called with training=True it applies the augmentation (the backbone stays
  in inference mode), so each call gives one augmented view's features."""
  return tf_keras.Model(model.inputs, model.get_layer(POOLED_FEATURES_LAYER).output,
                        name='feature_extractor')


def head(model: tf_keras.Model) -> tf_keras.Model:
  """Pooled features -> probabilities, sharing the classifier's head layers:
  fitting it on cached features fits the exported classifier."""
  features = tf_keras.Input(model.get_layer(POOLED_FEATURES_LAYER).output.shape[1:],
                            name='features')
  x = model.get_layer(NORMALIZATION_LAYER)(features)
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
