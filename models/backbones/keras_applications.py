"""Backbones from `tf_keras.applications`, as alternatives to EfficientNet-Lite0.

Their 'imagenet' weights are Keras downloads and so need internet; offline,
pass a local `.h5` weights file instead.
"""

from typing import Callable, Dict, NamedTuple, Optional

import tensorflow as tf
import tf_keras

DEFAULT_IMAGE_SIZE = 224
# ImageNet channel means in BGR order, as the original Caffe models used.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def scale_to_unit_range(images: tf.Tensor) -> tf.Tensor:
  """[0, 255] -> [-1, 1]: MobileNetV2's `preprocess_input`."""
  return images / 127.5 - 1.0


def unchanged(images: tf.Tensor) -> tf.Tensor:
  """Keras' EfficientNets rescale and normalize inside the model."""
  return images


def caffe_style(images: tf.Tensor) -> tf.Tensor:
  """RGB -> BGR minus the ImageNet mean: ResNet50's and VGG16's `preprocess_input`."""
  return images[..., ::-1] - tf.constant(_CAFFE_BGR_MEAN, images.dtype)


class Application(NamedTuple):
  constructor: Callable[..., tf_keras.Model]
  normalize: Callable[[tf.Tensor], tf.Tensor]


APPLICATIONS: Dict[str, Application] = {
    'mobilenet_v2': Application(tf_keras.applications.MobileNetV2, scale_to_unit_range),
    'efficientnet_b0': Application(tf_keras.applications.EfficientNetB0, unchanged),
    'resnet50': Application(tf_keras.applications.ResNet50, caffe_style),
    'vgg16': Application(tf_keras.applications.VGG16, caffe_style),
}


def build(name: str, image_size: int = DEFAULT_IMAGE_SIZE,
          weights: Optional[str] = 'imagenet') -> tf_keras.Model:
  """Feature extractor without its classifier: [B, S, S, 3] -> last feature map.

  `weights`: None (random), 'imagenet' (Keras download) or an `.h5` path.
  """
  model = APPLICATIONS[name].constructor(
      include_top=False, weights='imagenet' if weights == 'imagenet' else None,
      input_shape=(image_size, image_size, 3))
  if weights not in (None, 'imagenet'):
    model.load_weights(weights)
  return model
