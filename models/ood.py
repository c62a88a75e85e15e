""""unknown" for images of no known class: how far an image lies from the
labeled train images in the backbone's feature space.

A softmax head always names one of its classes, even for a photo of
something it never saw. The score here is the k-nearest-neighbour distance of
Sun et al. 2022 ("Out-of-distribution detection with deep nearest
neighbors"): one minus the mean cosine similarity of the image's normalised
features to its `neighbours` nearest reference images, a stratified sample of
at most `max_reference_images` labeled train images. It needs no labels of
foreign images, and, side by side with the maximum softmax probability and
the energy score, separated other data sets best (docs/trust.md).

The threshold is calibrated on held-out scores: each labeled train image's
distance to the reference images other than itself. An image scoring above
it is `unknown`; about `false_rejection_rate` of images like the train
images are. The reference features and the threshold are weights of
`UnknownScore`, exported inside every serving signature and the TFLite model.
"""

import dataclasses
import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models import neighbours
from pipeline.config import OodConfig

UNKNOWN = 'unknown'


@dataclasses.dataclass(frozen=True)
class Detector:
  reference: np.ndarray     # [R, D] unit-length features of labeled train images
  neighbours: int
  threshold: float


def scores(features: np.ndarray, reference: np.ndarray, k: int,
           own: Optional[np.ndarray] = None) -> np.ndarray:
  """One minus the mean cosine similarity to the k nearest reference rows
  (`own`: each row's own index in `reference`, or -1, as neighbours.nearest)."""
  similarities, _ = neighbours.nearest(features, reference, k, own)
  return 1.0 - similarities.mean(axis=1)


def reference_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
  """Sorted indices of `size` images (all when fewer) drawn class by class in
  turn, so that a large class does not crowd out a small one."""
  if len(labels) <= size:
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  rank = np.empty(len(labels), np.int64)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    rank[rng.permutation(members)] = np.arange(len(members))
  order = np.lexsort((rng.random(len(labels)), rank))
  return np.sort(order[:size])


def fit(features: np.ndarray, labels: np.ndarray, settings: OodConfig,
        seed: int) -> Tuple[Optional[Detector], Dict[str, Any]]:
  """The detector of `features` [N, D] (the head's normalised features of the
  labeled train images), with what it is for the training history; None
  when there are too few images to hold any out."""
  chosen = reference_sample(labels, settings.max_reference_images, seed)
  k = min(settings.neighbours, len(chosen) - 1)
  if k < 1:
    return None, {'enabled': False, 'reason': 'fewer than 2 labeled train images'}
  reference = neighbours.unit_rows(features[chosen])
  own = np.full(len(features), -1)
  own[chosen] = np.arange(len(chosen))
  held_out = scores(features, reference, k, own)
  threshold = float(np.quantile(held_out, 1.0 - settings.false_rejection_rate))
  facts = {
      'enabled': True,
      'method': f'mean cosine distance to the {k} nearest of {len(chosen)} '
                f'labeled train images',
      'neighbours': k,
      'reference_images': int(len(chosen)),
      'threshold': threshold,
      'false_rejection_rate': settings.false_rejection_rate,
      'held_out_rejected': float(np.mean(held_out > threshold)),
  }
  logging.info('Unknown-image detector: %s; threshold %.4f.', facts['method'], threshold)
  return Detector(reference, k, threshold), facts


class UnknownScore(tf_keras.layers.Layer):
  """Normalised features [N, D] (unit length: model.FeatureNormalization's
  output) -> (score [N], unknown [N] bool), in-graph: the reference features
  and the threshold are (untrained) weights, saved with the model."""

  def __init__(self, detector: Detector, **kwargs):
    super().__init__(**kwargs)
    self.neighbours = detector.neighbours
    self.reference = self.add_weight(
        name='reference', shape=detector.reference.shape, trainable=False,
        initializer=tf_keras.initializers.Constant(detector.reference))
    self.threshold = self.add_weight(
        name='threshold', shape=[], trainable=False,
        initializer=tf_keras.initializers.Constant(detector.threshold))

  def call(self, features):
    similarities = tf.matmul(features, self.reference, transpose_b=True)
    nearest = tf.math.top_k(similarities, k=self.neighbours).values
    score = 1.0 - tf.reduce_mean(nearest, axis=-1)
    return score, score > self.threshold
