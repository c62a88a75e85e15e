"""Grad-CAM: the `explain_pixels` signature (models/explain.py) and
`predict --explain`.

The signature and the command run on the end-to-end run's published version
(tests/conftest.py, 64-px model: 2x2 feature maps; read only). The heatmap's
arithmetic is checked on a classifier with an untrained head against a numerical
gradient of an independent NumPy copy of the head.
"""

import csv
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from models import classifier
from models import explain
from models import image_codec
from models import preprocessing
from models import signatures
from models.backbones import get_backbone
from pipeline import __main__ as cli
from pipeline import predict

from helpers import E2E_CLASSES, SAMPLE_DIR, model_settings

IMAGES_PER_CLASS = 10
NORMALIZE = get_backbone('efficientnet_lite0').normalize


def _sample_paths(per_class=IMAGES_PER_CLASS):
  return [os.path.join(SAMPLE_DIR, name, file_name) for name in E2E_CLASSES
          for file_name in sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[:per_class]]


def _pixels(paths, size):
  contents = []
  for path in paths:
    with open(path, 'rb') as f:
      contents.append(f.read())
  return image_codec.decode_and_resize(tf.constant(contents), size)


@pytest.fixture(scope='module')
def published(e2e_first_run):
  loaded = tf.saved_model.load(e2e_first_run.pushed_to)
  return {'dir': e2e_first_run.pushed_to, 'loaded': loaded,
          'pixels': _pixels(_sample_paths(), 64)}


def test_explain_pixels_gives_heatmaps_and_the_models_probabilities(published):
  loaded, pixels = published['loaded'], published['pixels']
  outputs = loaded.signatures[signatures.EXPLAIN_SIGNATURE](
      **{signatures.PIXELS_INPUT: pixels})
  heatmaps = outputs[explain.HEATMAP].numpy()
  assert heatmaps.shape == (len(pixels), 2, 2)          # 64 px / stride 32
  assert heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1)
  assert np.ptp(heatmaps, axis=0).max() > 0.5           # not one map for all images
  reference = loaded.signatures[signatures.PIXELS_SIGNATURE](
      **{signatures.PIXELS_INPUT: pixels})['probabilities'].numpy()
  np.testing.assert_allclose(outputs['probabilities'].numpy(), reference, atol=1e-6)
  np.testing.assert_array_equal(outputs['class_id'].numpy(), reference.argmax(axis=1))


def test_a_batch_larger_than_one_chunk_matches_its_images_alone(published):
  explain_pixels = published['loaded'].signatures[signatures.EXPLAIN_SIGNATURE]
  pixels = published['pixels'][:3]
  count = signatures.MAX_IMAGES_AT_ONCE + 2
  together = explain_pixels(pixels=tf.gather(pixels, np.arange(count) % 3))
  alone = explain_pixels(pixels=pixels)
  np.testing.assert_allclose(together[explain.HEATMAP].numpy(),
                             alone[explain.HEATMAP].numpy()[np.arange(count) % 3],
                             atol=1e-5)


def _numpy_log_probabilities(pooled, center, kernel, bias):
  """The head (FeatureNormalization, Dense softmax) in float64, log-probabilities."""
  powered = np.sign(pooled) * np.sqrt(np.abs(pooled) + 1e-6) - center
  logits = powered / np.linalg.norm(powered, axis=-1, keepdims=True) @ kernel + bias
  return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)


def test_heatmap_is_the_relative_grad_cam_of_the_top_class_log_probability():
  """explain.grad_cam against a central-difference gradient of the top class's
  log-probability w.r.t. the pooled features (the spatial mean of the map's
  gradient, the pooling being a mean), through a NumPy copy of the head."""
  # ImageNet weights: a random backbone's features are ~1e-12, where the head's
  # square root is too steep for a numerical gradient.
  config = model_settings('model.image_size=64', 'model.weights=imagenet',
                             'training.seed=3', class_names=E2E_CLASSES)
  model = classifier.build_classifier(config, len(E2E_CLASSES),
                                      preprocessing.TRANSFORMED_IMAGE_KEY)
  pixels = _pixels(_sample_paths(2), 64)
  feature_map = model.get_layer(classifier.BACKBONE_LAYER)(
      NORMALIZE(pixels), training=False).numpy().astype(np.float64)
  pooled = feature_map.mean(axis=(1, 2))
  normalization = model.get_layer(classifier.NORMALIZATION_LAYER)
  normalization.adapt(pooled.astype(np.float32))
  dense = model.get_layer(classifier.PROBABILITIES_LAYER)
  head = (normalization.center.numpy(), dense.kernel.numpy(), dense.bias.numpy())

  outputs = explain.grad_cam(model, NORMALIZE)(pixels)
  top = _numpy_log_probabilities(pooled, *head).argmax(axis=1)
  np.testing.assert_array_equal(outputs['class_id'].numpy(), top)
  for image, (features, class_id) in enumerate(zip(pooled, top)):
    # Channels that are 0 everywhere (ReLU6) add nothing to the map, and the
    # head's signed square root has a kink at 0: no numerical gradient there.
    active = np.flatnonzero(features)
    steps = 1e-4 * np.abs(features[active])
    shifts = np.zeros([len(active), len(features)])
    shifts[np.arange(len(active)), active] = steps
    gradient = np.zeros_like(features)
    gradient[active] = (_numpy_log_probabilities(features + shifts, *head)[:, class_id] -
                        _numpy_log_probabilities(features - shifts, *head)[:, class_id]
                        ) / (2 * steps)
    height, width = feature_map.shape[1:3]
    relative = feature_map[image] - pooled[image]
    cam = np.maximum(relative @ (gradient / (height * width)), 0)
    np.testing.assert_allclose(outputs[explain.HEATMAP][image].numpy(), cam / cam.max(),
                               atol=2e-3)


def test_predict_explain_writes_an_overlay_per_image_at_its_size(published, tmp_path, capsys):
  """Two files of the same name in two folders get two overlays; the one that
  cannot be decoded gets none."""
  first, second = _sample_paths(2)[:2]
  for folder, source in (('a', first), ('b', second)):
    (tmp_path / 'in' / folder).mkdir(parents=True)
    shutil.copy(source, tmp_path / 'in' / folder / 'shoe.png')
  with Image.open(first) as image:
    image.convert('RGB').resize((90, 50)).save(tmp_path / 'in' / 'wide.jpg')
  (tmp_path / 'in' / 'notes.png').write_text('not a picture')
  overlays = tmp_path / 'overlays'
  code = cli.main(['predict', '--model', published['dir'], '--explain', str(overlays),
                   str(tmp_path / 'in')])
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 1
  scored = [row for row in rows if 'error' not in row]
  assert [os.path.relpath(row['path'], tmp_path / 'in') for row in scored] == [
      'wide.jpg', os.path.join('a', 'shoe.png'), os.path.join('b', 'shoe.png')]
  assert 'explanation' not in next(row for row in rows if 'error' in row)
  names = [row['explanation'] for row in scored]
  assert names == [str(overlays / f'wide{predict.OVERLAY_SUFFIX}'),
                   str(overlays / f'shoe{predict.OVERLAY_SUFFIX}'),
                   str(overlays / f'shoe-2{predict.OVERLAY_SUFFIX}')]
  assert sorted(os.listdir(overlays)) == sorted(os.path.basename(n) for n in names)
  for row in scored:
    with Image.open(row['path']) as image, Image.open(row['explanation']) as overlay:
      assert overlay.format == 'PNG' and overlay.size == image.size
      assert overlay.mode == 'RGB'
      # The overlay is the image under a heatmap, not the image itself.
      assert np.abs(np.asarray(overlay, np.float32) -
                    np.asarray(image.convert('RGB'), np.float32)).mean() > 10


def test_predict_explain_in_csv_adds_the_explanation_column(published, tmp_path, capsys):
  (image,) = _sample_paths(1)[:1]
  output = tmp_path / 'scores.csv'
  cli.main(['predict', '--model', published['dir'], '--format', 'csv', '--output',
            str(output), '--explain', str(tmp_path / 'overlays'), image])
  capsys.readouterr()
  with open(output, newline='', encoding='utf-8') as f:
    (row,) = csv.DictReader(f)
  assert list(row)[-1] == predict.EXPLANATION_FIELD
  assert os.path.isfile(row[predict.EXPLANATION_FIELD])
