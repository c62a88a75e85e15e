"""Trains the classifier's head on cached backbone features, optionally with
unlabeled images (FixMatch-style semi-supervised learning).

Supervised part: an epoch passes once over the labeled images in random order,
each in one of its cached views drawn at random (the clean image or one of its
augmented copies), with class weights against imbalance: the same number of
steps as an epoch over the images themselves.

Semi-supervised part (Sohn et al. 2020, "FixMatch", on a frozen backbone):
for each labeled batch, `unlabeled_ratio` x as many unlabeled images are drawn.
The head's prediction on the weak view becomes a pseudo-label when its
confidence is at least `confidence_threshold`; the head is then trained to
predict that label on a strongly augmented view of the same image (larger
ranges plus Cutout). On a frozen backbone the Trainer uses the clean image as
the weak view: flip-and-shift views scored lower (docs/label_efficiency.md). The
unlabeled loss, weighted by `unlabeled_weight`, is averaged over all unlabeled
images, so it grows as the head becomes confident. Both kinds of views come
from the feature cache (feature_cache.py).
"""

import dataclasses
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras


@dataclasses.dataclass(frozen=True)
class LabeledViews:
  features: np.ndarray        # [views, N, D]: clean first, then augmented
  labels: np.ndarray          # [N] class ids


@dataclasses.dataclass(frozen=True)
class UnlabeledViews:
  weak: np.ndarray            # [weak views, M, D] (the Trainer: the clean image)
  strong: np.ndarray          # [strong views, M, D]


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Inverse-frequency weights (mean 1 over present classes) for imbalance."""
  counts = np.bincount(labels, minlength=num_classes)
  present = counts > 0
  weights = np.zeros(num_classes, np.float32)
  weights[present] = counts[present].sum() / (present.sum() * counts[present])
  return weights


def _evaluate(head: tf_keras.Model, evaluation: Tuple[np.ndarray, np.ndarray],
              batch_size: int) -> Tuple[float, float]:
  features, labels = evaluation
  probabilities = head.predict(features, batch_size=max(batch_size, 256), verbose=0)
  loss = tf_keras.losses.sparse_categorical_crossentropy(labels, probabilities)
  return float(np.mean(loss)), float(np.mean(probabilities.argmax(-1) == labels))


def train_head(head: tf_keras.Model, labeled: LabeledViews, config: Dict[str, Any],
               unlabeled: Optional[UnlabeledViews] = None,
               evaluation: Optional[Tuple[np.ndarray, np.ndarray]] = None,
               summary_dir: Optional[str] = None) -> Dict[str, List[float]]:
  """Trains `head` (features -> probabilities) in place; returns the history.

  `config` is the Trainer's custom_config: its `training` section (epochs,
  batch_size, learning_rate, class_weights, early_stopping_patience, seed)
  and, when `unlabeled` is given, its `semi_supervised` section. With
  `evaluation` (clean eval features and labels) the loop stops early on the
  eval loss and keeps the best epoch's weights; without it, it runs every
  epoch. The history holds per-epoch lists like Keras' `History.history`.
  """
  training = config['training']
  semi = config['semi_supervised']
  batch_size = training['batch_size']
  rng = np.random.default_rng(training['seed'])
  num_classes = head.output_shape[-1]
  weights = (class_weights(labeled.labels, num_classes) if training['class_weights']
             else np.ones(num_classes, np.float32))
  optimizer = tf_keras.optimizers.Adam(training['learning_rate'])
  threshold = float(semi['confidence_threshold'])
  unlabeled_weight = float(semi['unlabeled_weight'])

  @tf.function(reduce_retracing=True)
  def supervised_loss(features, labels, sample_weights):
    probabilities = head(features, training=True)
    losses = tf_keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    accuracy = tf.reduce_mean(tf.cast(
        tf.argmax(probabilities, -1, output_type=tf.int32) == labels, tf.float32))
    return tf.reduce_sum(losses * sample_weights) / tf.reduce_sum(sample_weights), accuracy

  @tf.function(reduce_retracing=True)
  def step(features, labels, sample_weights, weak, strong):
    with tf.GradientTape() as tape:
      loss, accuracy = supervised_loss(features, labels, sample_weights)
      if weak is None:
        unlabeled_loss, mask_rate = tf.constant(0.0), tf.constant(0.0)
      else:
        guess = tf.stop_gradient(head(weak, training=False))
        mask = tf.cast(tf.reduce_max(guess, -1) >= threshold, tf.float32)
        strong_probabilities = head(strong, training=True)
        unlabeled_loss = tf.reduce_mean(mask * tf_keras.losses.sparse_categorical_crossentropy(
            tf.argmax(guess, -1), strong_probabilities))
        mask_rate = tf.reduce_mean(mask)
      total = loss + unlabeled_weight * unlabeled_loss
    variables = head.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
    return loss, accuracy, unlabeled_loss, mask_rate

  views, count = labeled.features.shape[:2]
  patience = training['early_stopping_patience'] if evaluation is not None else 0
  history: Dict[str, List[float]] = {}
  best_loss, best_weights, best_epoch, waited = np.inf, None, 0, 0
  writer = tf.summary.create_file_writer(summary_dir) if summary_dir else None
  for epoch in range(training['epochs']):
    start = time.perf_counter()
    sums = np.zeros(4)
    order = rng.permutation(count)
    drawn_views = rng.integers(0, views, count)
    steps = 0
    for begin in range(0, count, batch_size):
      image = order[begin:begin + batch_size]
      view = drawn_views[image]
      labels = labeled.labels[image].astype(np.int32)
      weak = strong = None
      if unlabeled is not None:
        drawn = rng.integers(0, unlabeled.weak.shape[1],
                             len(image) * semi['unlabeled_ratio'])
        weak = unlabeled.weak[rng.integers(0, len(unlabeled.weak), len(drawn)), drawn]
        strong = unlabeled.strong[rng.integers(0, len(unlabeled.strong), len(drawn)),
                                  drawn]
      sums += [float(value) for value in step(
          labeled.features[view, image], labels, weights[labels], weak, strong)]
      steps += 1
    logs = dict(zip(['loss', 'accuracy', 'unlabeled_loss', 'pseudo_label_rate'],
                    sums / steps))
    if unlabeled is None:
      del logs['unlabeled_loss'], logs['pseudo_label_rate']
    logs['train_seconds'] = time.perf_counter() - start
    if evaluation is not None:
      logs['val_loss'], logs['val_accuracy'] = _evaluate(head, evaluation, batch_size)
    logs['seconds'] = time.perf_counter() - start
    for key, value in logs.items():
      history.setdefault(key, []).append(float(value))
    if writer:
      with writer.as_default(step=epoch):
        for key, value in logs.items():
          tf.summary.scalar(key, value)
    logging.info('Head epoch %d/%d: %s', epoch + 1, training['epochs'],
                 ', '.join(f'{key} {value:.4g}' for key, value in logs.items()))
    if patience:
      if logs['val_loss'] < best_loss:
        best_loss, best_weights, best_epoch, waited = (
            logs['val_loss'], head.get_weights(), epoch, 0)
      else:
        waited += 1
        if waited >= patience:
          break
  if best_weights is not None:
    head.set_weights(best_weights)
    logging.info('Kept the head of epoch %d (eval loss %.4f).', best_epoch + 1, best_loss)
  return history
