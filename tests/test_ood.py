"""Trust in a prediction: the unknown-image detector (models/ood.py)
and calibrated confidence (calibration.py), fitted on held-out data (the
exported outputs: tests/test_signatures.py, and a real run below)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import special
from skimage import data as skimage_data

from components import contracts
from models import ood
from models import signatures
from models.trainer import calibration
from pipeline.config import OodConfig

from helpers import E2E_CLASSES, sample_bytes

SETTINGS = OodConfig(false_rejection_rate=0.1, neighbours=3, max_reference_images=1000)


def _clusters(rng, per_cluster, centres):
  features = np.concatenate([centre + 0.3 * rng.normal(size=(per_cluster, len(centre)))
                             for centre in centres])
  return features, np.repeat(np.arange(len(centres)), per_cluster)


def test_threshold_rejects_the_target_share_and_far_images():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 16))
  features, labels = _clusters(rng, 200, centres)
  detector, facts = ood.fit(features, labels, SETTINGS, seed=0)
  assert facts['reference_images'] == 600 and detector.neighbours == 3
  assert facts['held_out_rejected'] == pytest.approx(0.1, abs=0.01)
  same, _ = _clusters(rng, 200, centres)
  rejected_same = np.mean(ood.scores(same, detector.reference, 3) > detector.threshold)
  assert rejected_same < 0.2
  foreign, _ = _clusters(rng, 100, rng.normal(size=(2, 16)))
  assert np.all(ood.scores(foreign, detector.reference, 3) > detector.threshold)


def test_reference_sample_is_drawn_class_by_class():
  labels = np.array([0] * 90 + [1] * 10)
  chosen = ood.reference_sample(labels, 20, seed=0)
  assert np.all(np.diff(chosen) > 0)
  assert np.bincount(labels[chosen]).tolist() == [10, 10]
  assert ood.reference_sample(labels, 500, seed=0).tolist() == list(range(100))


def test_too_few_images_give_no_detector():
  detector, facts = ood.fit(np.ones((1, 4)), np.array([0]), SETTINGS, seed=0)
  assert detector is None and facts['enabled'] is False


def test_in_graph_score_is_the_fitted_score():
  rng = np.random.default_rng(1)
  features, labels = _clusters(rng, 50, rng.normal(size=(2, 8)))
  detector, _ = ood.fit(features, labels, SETTINGS, seed=0)
  queries = np.concatenate([features[:20], rng.normal(size=(20, 8)) * 3])
  unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  score, unknown = ood.UnknownScore(detector)(tf.constant(unit, tf.float32))
  expected = ood.scores(queries, detector.reference, detector.neighbours)
  np.testing.assert_allclose(score.numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(unknown.numpy(), expected > detector.threshold)
  assert 0 < unknown.numpy().sum() < len(queries)


def test_temperature_undoes_overconfidence():
  rng = np.random.default_rng(2)
  logits = 3.0 * rng.normal(size=(6000, 5))
  labels = np.array([rng.choice(5, p=p) for p in special.softmax(logits / 2.5, axis=1)])
  overconfident = special.softmax(logits, axis=1)
  temperature = calibration.fit_temperature(overconfident, labels)
  assert temperature == pytest.approx(2.5, rel=0.1)
  before = calibration.expected_calibration_error(overconfident, labels)
  after = calibration.expected_calibration_error(
      calibration.rescale(overconfident, temperature), labels)
  assert before > 0.1 and after < 0.03
  np.testing.assert_array_equal(calibration.rescale(overconfident, temperature).argmax(1),
                                overconfident.argmax(1))


def test_reliability_bins_count_every_image_once():
  probabilities = np.array([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
  labels = np.array([0, 1, 1, 0])
  bins = calibration.reliability(probabilities, labels, bins=5)
  assert sum(b.images for b in bins) == 4
  filled = [(round(b.low, 6), b.images, b.accuracy) for b in bins if b.images]
  assert filled == [(0.4, 2, 0.5), (0.6, 1, 1.0), (0.8, 1, 1.0)]
  # |0.525 - 0.5| * 2 + |0.7 - 1| + |0.95 - 1|, over 4 images.
  assert calibration.expected_calibration_error(probabilities, labels, bins=5) == (
      pytest.approx((0.05 + 0.3 + 0.05) / 4))


def _foreign_photos(size=96):
  """Crops of scikit-image's bundled photos: things no clothes model knows."""
  crops = []
  for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'moon'):
    image = np.asarray(getattr(skimage_data, name)())
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    height, width = image.shape[:2]
    for top, left in ((0, 0), (height // 3, width // 3)):
      side = min(height, width) * 2 // 3
      crop = Image.fromarray(image[top:top + side, left:left + side]).resize((size, size))
      crops.append(tf.io.encode_png(np.asarray(crop)).numpy())
  return crops


@pytest.mark.pipeline
def test_a_real_run_rejects_foreign_photos_and_keeps_its_classes(e2e_first_run):
  version_dir = e2e_first_run.pushed_to
  with open(os.path.join(version_dir, contracts.SAVED_MODEL_EXTRAS_DIR, contracts.TRAINING_HISTORY_FILE)) as f:
    history = json.load(f)
  facts = history['ood']
  assert facts['enabled'] and facts['threshold'] > 0
  assert history['head']['calibration']['temperature'] > 0
  # Images of its classes it never saw (the run used the first 23 of each).
  known = [sample_bytes(label, i) for label in E2E_CLASSES for i in range(30, 40)]
  serve = tf.saved_model.load(version_dir).signatures[signatures.SERVING_SIGNATURE]
  known_unknown = serve(images=tf.constant(known))['unknown'].numpy()
  foreign_unknown = serve(images=tf.constant(_foreign_photos()))['unknown'].numpy()
  # Target 5 % false rejections; 30 images are a small sample of it.
  assert known_unknown.mean() <= 0.2
  assert foreign_unknown.mean() >= 0.9
