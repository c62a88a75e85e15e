"""Pretrained image backbones by name: how to normalize images and build one.

Transform uses only `normalize` (it is traced into the TF Transform graph, so
it is pure TF ops); the Trainer uses `build`, so the two always agree.
"""

import dataclasses
import functools
from typing import Callable, Optional

import tensorflow as tf
import tf_keras

from models.backbones import efficientnet_lite
from models.backbones import keras_applications

DEFAULT_BACKBONE = 'efficientnet_lite0'


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A backbone: name, native input size, input normalization and builder.

  `normalize` maps float32 RGB in [0, 255], shape [..., H, W, 3], to the range
  the backbone expects. `build(image_size, weights)` returns a feature
  extractor [B, S, S, 3] (normalized) -> final feature map [B, h, w, C], with
  `weights` None (random), 'imagenet' or a path to a local weights file.
  """
  name: str
  default_image_size: int
  normalize: Callable[[tf.Tensor], tf.Tensor]
  build: Callable[[int, Optional[str]], tf_keras.Model]


_BACKBONES = {
    **{name: BackboneSpec(name, variant.default_image_size, efficientnet_lite.normalize,
                          functools.partial(efficientnet_lite.build, name))
       for name, variant in efficientnet_lite.VARIANTS.items()},
    **{name: BackboneSpec(name, keras_applications.DEFAULT_IMAGE_SIZE,
                          application.normalize,
                          functools.partial(keras_applications.build, name))
       for name, application in keras_applications.APPLICATIONS.items()},
}


def get_backbone(name: str) -> BackboneSpec:
  try:
    return _BACKBONES[name]
  except KeyError:
    raise ValueError(f'Unknown backbone {name!r}; valid names: '
                     f'{", ".join(sorted(_BACKBONES))}.') from None
