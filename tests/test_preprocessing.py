"""preprocessing_fn through real TF Transform on Beam, on a handful of images."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from components import artifact_readers
from models import preprocessing

from helpers import analyze_and_transform

IMAGE_SIZE = 32
CLASS_NAMES = ['cat', 'dog', 'fish']


def _solid(color, size, mode, image_format):
  buffer = io.BytesIO()
  Image.new(mode, size, color).save(buffer, format=image_format)
  return buffer.getvalue()


# (encoded image, label, expected RGB value of every pixel)
CASES = [
    (_solid((255, 0, 127), (40, 30), 'RGB', 'PNG'), 'dog', (255, 0, 127)),
    (_solid((10, 200, 30), (64, 64), 'RGB', 'BMP'), 'dog', (10, 200, 30)),
    (_solid(77, (20, 50), 'L', 'GIF'), 'dog', (77, 77, 77)),
    (_solid((0, 0, 255, 255), (48, 48), 'RGBA', 'PNG'), 'cat', (0, 0, 255)),
    (_solid(200, (28, 28), 'L', 'PNG'), 'fish', (200, 200, 200)),
    (_solid((128, 128, 128), (100, 80), 'RGB', 'JPEG'), 'fish', (128, 128, 128)),
]


@pytest.fixture(scope='module')
def transformed():
  return analyze_and_transform(
      [(image, label) for image, label, _ in CASES], IMAGE_SIZE, CLASS_NAMES)


def test_images_of_any_format_become_normalized_rgb(transformed):
  data, _ = transformed
  assert len(data) == len(CASES)
  for row, (_, _, rgb) in zip(data, CASES):
    image = np.asarray(row[preprocessing.TRANSFORMED_IMAGE_KEY]).reshape(
        IMAGE_SIZE, IMAGE_SIZE, 3)
    expected = (np.array(rgb, np.float32) - 127.0) / 128.0   # Lite0's range
    np.testing.assert_allclose(image, np.broadcast_to(expected, image.shape),
                               atol=2.5 / 128)  # JPEG rounding


def test_class_ids_follow_the_schema_order_not_frequency(transformed):
  data, output_dir = transformed
  ids = [int(row[preprocessing.TRANSFORMED_LABEL_KEY]) for row in data]
  assert ids == [CLASS_NAMES.index(label) for _, label, _ in CASES]
  assert artifact_readers.class_names(output_dir) == CLASS_NAMES


def test_transform_graph_serves_images_without_labels(transformed):
  _, output_dir = transformed
  layer = tft.TFTransformOutput(output_dir).transform_features_layer()
  images = tf.constant([[CASES[0][0]], [CASES[4][0]]])
  outputs = layer({preprocessing.IMAGE_KEY: images})
  assert outputs[preprocessing.TRANSFORMED_IMAGE_KEY].shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert preprocessing.TRANSFORMED_LABEL_KEY not in outputs
