"""Transform module: raw image bytes and class names -> model-ready tensors.

This graph runs at training, evaluation and serving time alike (the Trainer
embeds it in every exported signature), so a served image is decoded, resized
and normalized exactly as the training images were.
"""

from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from components.contracts import IMAGE_FEATURE, LABEL_FEATURE, LABEL_VOCABULARY
from models import image_codec
from models.backbones import get_backbone
from models.settings import ModelSettings

# The raw features Transform reads (ImageExampleGen's) and what it writes.
IMAGE_KEY = IMAGE_FEATURE
LABEL_KEY = LABEL_FEATURE
TRANSFORMED_IMAGE_KEY = 'image_xf'
TRANSFORMED_LABEL_KEY = 'label_xf'


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
  """Decodes, resizes and normalizes images; maps class names to ids.

  custom_config: `model.backbone` (name), `image_size` (pixels), `class_names`
  (the schema's label domain) and optionally `max_image_pixels` (the
  decompression-bomb limit, `data.max_image_pixels`). Class names become
  reserved vocabulary tokens so that class ids follow the schema's order on
  every run, whatever the class frequencies; a label outside the domain would
  get an id after them. At serving time there is no label: the TFT layer
  prunes what needs it.
  """
  settings = ModelSettings.from_custom_config(custom_config)
  encoded = tf.reshape(inputs[IMAGE_KEY], [-1])
  images = image_codec.decode_and_resize(encoded, settings.image_size,
                                         settings.max_image_pixels)
  normalize = get_backbone(settings.model.backbone).normalize
  labels = tf.reshape(inputs[LABEL_KEY], [-1])
  return {
      TRANSFORMED_IMAGE_KEY: normalize(images),
      TRANSFORMED_LABEL_KEY: tft.compute_and_apply_vocabulary(
          labels, vocab_filename=LABEL_VOCABULARY,
          reserved_tokens=list(settings.class_names)),
  }


