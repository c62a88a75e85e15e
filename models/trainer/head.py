"""Fits the classifier's head on cached backbone features; every choice is made
by cross-validation on the labeled train split, never on the eval split.

The head is multinomial logistic regression on normalised features
(model.FeatureNormalization), fitted to convergence with L-BFGS
(scikit-learn) and copied into the classifier's softmax layer: on a frozen
backbone a converged, regularised linear model is a stronger few-shot learner
than a small-batch Adam head stopped early (docs/label_efficiency.md). What
is left to choose is chosen by repeated stratified k-fold cross-validation
over the labeled train images (`repeats` shuffles; every view of an image in
its image's fold):

1. how strongly to regularise: C (scikit-learn's inverse strength) from
   REGULARIZATION_GRID;
2. with an unlabeled split, whether to learn from it: self-training at that C
   with class-balanced pseudo-labels (in each of `rounds` rounds every class
   takes the unlabeled images it is most confident about, up to
   `pseudo_label_fraction` of the pool shared equally among classes by the
   last round, each weighted `pseudo_label_weight` against a labeled image)
   against the supervised head. The unlabeled images are used unless they
   lower the cross-validated accuracy; then the Trainer falls back on the
   supervised head, and the history says which it chose and why;
3. how sure to say it is: the temperature that calibrates the chosen head's
   held-out probabilities (calibration.py).

The eval split is never read here, so the Evaluator's accuracy is measured
on images nothing was tuned on.
"""

import dataclasses
import gc
import logging
import math
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from scipy import special
from sklearn import exceptions as sklearn_exceptions
from sklearn import linear_model
from sklearn import model_selection

from models import classifier
from models.settings import ModelSettings
from models.trainer import calibration
from models.trainer import learning_curve

# Candidate inverse regularisation strengths: on unit-length features the
# useful range lies well above scikit-learn's default of 1.
REGULARIZATION_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# Used when some class has a single labeled image, so nothing can be held out.
FALLBACK_REGULARIZATION = 10.0
MAX_ITERATIONS = 1000
# Shuffles of the k folds: with a few labels per class one shuffle's verdict
# on self-training is mostly noise (docs/label_efficiency.md). Past
# REPEATED_CV_MAX_IMAGES labeled images one shuffle's noise is small and every
# fit costs more (~100 L-BFGS fits in all; ~8 s each on 16,000 images x 2
# views against 0.1 s on 320), so the folds are not repeated.
CV_REPEATS = 3
REPEATED_CV_MAX_IMAGES = 1000


@dataclasses.dataclass(frozen=True)
class LabeledViews:
  features: np.ndarray        # [views, N, D]: clean first, then augmented
  labels: np.ndarray          # [N] class ids


@dataclasses.dataclass(frozen=True)
class LinearHead:
  """Softmax regression weights in the layout of a Keras Dense layer."""
  kernel: np.ndarray          # [D, classes]
  bias: np.ndarray            # [classes]

  def probabilities(self, features: np.ndarray) -> np.ndarray:
    return special.softmax(features @ self.kernel + self.bias, axis=-1)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Inverse-frequency weights (mean 1 over present classes) for imbalance."""
  counts = np.bincount(labels, minlength=num_classes)
  present = counts > 0
  weights = np.zeros(num_classes, np.float32)
  weights[present] = counts[present].sum() / (present.sum() * counts[present])
  return weights


def fit_logistic(features: np.ndarray, labels: np.ndarray, sample_weights: np.ndarray,
                 regularization: float, num_classes: int, seed: int) -> LinearHead:
  """Multinomial logistic regression over `num_classes`; a class absent from
  `labels` gets a logit far below the others."""
  present = np.unique(labels)
  if len(present) < 2:
    raise ValueError(f'Cannot fit a classifier on {len(present)} class(es).')
  model = linear_model.LogisticRegression(C=regularization, max_iter=MAX_ITERATIONS,
                                          random_state=seed)
  with warnings.catch_warnings():
    # Close enough to converged for a classifier; scikit-learn warns anyway.
    warnings.simplefilter('ignore', sklearn_exceptions.ConvergenceWarning)
    model.fit(features, labels, sample_weight=sample_weights)
  # The fit leaves its float64 copy of `features` in a reference cycle (joblib's
  # Parallel holds the generator of fits), freed only by a full collection:
  # at 20,000 images the cross-validation's fits piled up 3-4 GB that way. The
  # cycle is young, so a collection of the young generations (~2 ms) frees it.
  gc.collect(1)
  coef, intercept = model.coef_, model.intercept_
  if len(present) == 2:       # scikit-learn fits one logit; softmax needs two
    coef, intercept = np.concatenate([-coef, coef]) / 2, np.array([-1, 1]) * intercept / 2
  kernel = np.zeros((features.shape[1], num_classes), np.float32)
  bias = np.full(num_classes, -1e4, np.float32)
  kernel[:, present], bias[present] = coef.T, intercept
  return LinearHead(kernel, bias)


class TrainingSet:
  """The labeled views and unlabeled features of one fit, normalised, with the
  settings every candidate head is fitted with."""

  def __init__(self, views: np.ndarray, labels: np.ndarray,
               unlabeled: Optional[np.ndarray], num_classes: int,
               settings: ModelSettings):
    self.views, self.labels, self.unlabeled = views, labels, unlabeled
    self.num_classes = num_classes
    self.seed = settings.training.seed
    self.semi = settings.semi_supervised
    self.image_weights = (class_weights(labels, num_classes)[labels]
                          if settings.training.class_weights
                          else np.ones(len(labels), np.float32))

  def rows(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows of `images`: every view, weighted 1/views each."""
    count = len(self.views)
    return (self.views[:, images].reshape(-1, self.views.shape[-1]),
            np.tile(self.labels[images], count),
            np.tile(self.image_weights[images], count) / count)

  def fit(self, images: np.ndarray, regularization: float,
          self_training: bool) -> Tuple[LinearHead, int]:
    """The head fitted on `images` (and the unlabeled pool, self-training);
    returns it with the number of pseudo-labels it was last fitted with."""
    features, labels, weights = self.rows(images)
    head = fit_logistic(features, labels, weights, regularization, self.num_classes,
                        self.seed)
    if not self_training:
      return head, 0
    rounds = self.semi.rounds
    for round_ in range(1, rounds + 1):
      probabilities = head.probabilities(self.unlabeled)
      guesses, confidence = probabilities.argmax(-1), probabilities.max(-1)
      per_class = math.ceil(round_ / rounds * self.semi.pseudo_label_fraction *
                            len(self.unlabeled) / self.num_classes)
      chosen = np.concatenate([
          members[np.argsort(-confidence[members], kind='stable')[:per_class]]
          for members in (np.flatnonzero(guesses == c) for c in range(self.num_classes))])
      head = fit_logistic(
          np.concatenate([features, self.unlabeled[chosen]]),
          np.concatenate([labels, guesses[chosen]]),
          np.concatenate([weights, np.full(len(chosen), self.semi.pseudo_label_weight,
                                           np.float32)]),
          regularization, self.num_classes, self.seed)
    return head, len(chosen)

  def accuracy(self, head: LinearHead, images: np.ndarray) -> float:
    """Accuracy on the clean view of `images`."""
    predicted = head.probabilities(self.views[0, images]).argmax(-1)
    return float(np.mean(predicted == self.labels[images]))

  @property
  def repeats(self) -> int:
    return CV_REPEATS if len(self.labels) <= REPEATED_CV_MAX_IMAGES else 1

  def folds(self, settings: ModelSettings) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over images, `repeats` shuffles of them; none when a
    class has a single image."""
    counts = np.bincount(self.labels)
    splits = min(settings.training.cv_folds, int(counts[counts > 0].min()))
    if splits < 2:
      return []
    return list(model_selection.RepeatedStratifiedKFold(
        n_splits=splits, n_repeats=self.repeats, random_state=self.seed).split(
            self.views[0], self.labels))

  def cross_validate(self, folds, regularization: float,
                     self_training: bool) -> Tuple[float, np.ndarray]:
    """Mean held-out accuracy over `folds`, and every image's held-out
    probabilities (clean view) from the first shuffle, which holds each out once."""
    accuracies = []
    out_of_fold = np.zeros((len(self.labels), self.num_classes), np.float32)
    for fold, (train, held_out) in enumerate(folds):
      head = self.fit(train, regularization, self_training)[0]
      probabilities = head.probabilities(self.views[0, held_out])
      accuracies.append(float(np.mean(probabilities.argmax(-1) == self.labels[held_out])))
      if fold < len(folds) // self.repeats:
        out_of_fold[held_out] = probabilities
    return float(np.mean(accuracies)), out_of_fold


def normalized(head_model: tf_keras.Model, features: np.ndarray) -> np.ndarray:
  """`features` [..., D] through the head's (adapted) FeatureNormalization."""
  layer = head_model.get_layer(classifier.NORMALIZATION_LAYER)
  flat = features.reshape(-1, features.shape[-1])
  return layer(tf.constant(flat)).numpy().reshape(features.shape)


def fit_head(head_model: tf_keras.Model, labeled: LabeledViews, settings: ModelSettings,
             unlabeled: Optional[np.ndarray] = None,
             summary_dir: Optional[str] = None) -> Tuple[Dict[str, Any], Optional[np.ndarray]]:
  """Fits `head_model` (features -> probabilities, model.head) in place.

  `unlabeled` holds the clean features [M, D] of the unlabeled split, or
  None. Adapts the normalisation to the labeled and unlabeled images, chooses
  the regularisation and whether to self-train by cross-validation, fits the
  final head on every labeled image, scales it by the temperature fitted on the
  held-out probabilities (calibration.py) and returns what was chosen and why,
  with each labeled image's out-of-fold probabilities [N, classes] under the
  chosen settings, calibrated (None when nothing could be held out;
  data_quality.py reads them). With `summary_dir`, the cross-validated accuracies go to TensorBoard too.
  """
  start = time.perf_counter()
  num_classes = head_model.output_shape[-1]
  clean = [labeled.features[0]] + ([] if unlabeled is None else [unlabeled])
  head_model.get_layer(classifier.NORMALIZATION_LAYER).adapt(np.concatenate(clean))
  training_set = TrainingSet(
      normalized(head_model, labeled.features), labeled.labels,
      None if unlabeled is None else normalized(head_model, unlabeled), num_classes, settings)
  folds = training_set.folds(settings)
  writer = tf.summary.create_file_writer(summary_dir) if summary_dir else None
  if folds:
    cv_accuracy, out_of_fold = zip(*(training_set.cross_validate(folds, c, False)
                                     for c in REGULARIZATION_GRID))
    best = int(np.argmax(cv_accuracy))
    regularization, out_of_fold, cv_accuracy = (
        REGULARIZATION_GRID[best], out_of_fold[best], list(cv_accuracy))
  else:
    cv_accuracy, regularization, out_of_fold = [], FALLBACK_REGULARIZATION, None
  history: Dict[str, Any] = {
      'method': 'logistic regression on normalised features',
      'cv_folds': len(folds) // training_set.repeats,
      'cv_repeats': training_set.repeats if folds else 0,
      'regularization': {'grid': list(REGULARIZATION_GRID), 'cv_accuracy': cv_accuracy,
                         'chosen': regularization},
      'cv_accuracy': max(cv_accuracy) if cv_accuracy else None,
  }
  self_training = False
  if unlabeled is not None:
    history['unlabeled'], self_training, self_trained_out_of_fold = _unlabeled_decision(
        training_set, folds, regularization, history['cv_accuracy'])
    if self_training:
      history['cv_accuracy'] = history['unlabeled']['cv_accuracy_self_training']
      out_of_fold = self_trained_out_of_fold
  head, pseudo_labels = training_set.fit(np.arange(len(labeled.labels)), regularization,
                                         self_training)
  history['calibration'], temperature = _calibration(out_of_fold, labeled.labels)
  head_model.get_layer(classifier.PROBABILITIES_LAYER).set_weights(
      [head.kernel / temperature, head.bias / temperature])
  if out_of_fold is not None:
    out_of_fold = calibration.rescale(out_of_fold, temperature).astype(np.float32)
  if unlabeled is not None:
    history['unlabeled']['pseudo_labels'] = pseudo_labels
  history['train_accuracy'] = training_set.accuracy(head, np.arange(len(labeled.labels)))
  curve_start = time.perf_counter()
  history['learning_curve'] = learning_curve.measure(training_set, folds, regularization,
                                                     training_set.seed)
  history['learning_curve_seconds'] = time.perf_counter() - curve_start
  history['seconds'] = time.perf_counter() - start
  if writer:
    with writer.as_default():
      for step, accuracy in enumerate(cv_accuracy):
        tf.summary.scalar('cv_accuracy_by_regularization', accuracy, step=step)
      tf.summary.scalar('train_accuracy', history['train_accuracy'], step=0)
    writer.close()
  logging.info('Head: C=%g chosen by %d-fold cross-validation (accuracy %s); '
               'train accuracy %.4f; %.1f s.', regularization, len(folds) // training_set.repeats,
               _format(cv_accuracy), history['train_accuracy'], history['seconds'])
  return history, out_of_fold


def _calibration(out_of_fold: Optional[np.ndarray],
                 labels: np.ndarray) -> Tuple[Dict[str, Any], float]:
  """The temperature fitted on the out-of-fold probabilities (calibration.py),
  with their calibration error before and after; 1 when nothing was held out."""
  if out_of_fold is None:
    return {'temperature': 1.0, 'reason': 'not calibrated: a class has a single '
                                          'labeled image, so nothing was held out'}, 1.0
  temperature = calibration.fit_temperature(out_of_fold, labels)
  facts = {
      'temperature': temperature,
      'fitted_on': f'out-of-fold probabilities of {len(labels)} labeled train images',
      'ece_before': calibration.expected_calibration_error(out_of_fold, labels),
      'ece_after': calibration.expected_calibration_error(
          calibration.rescale(out_of_fold, temperature), labels),
  }
  logging.info('Calibration: temperature %.3f; held-out calibration error %.4f -> %.4f.',
               temperature, facts['ece_before'], facts['ece_after'])
  return facts, temperature


def _unlabeled_decision(
    training_set: TrainingSet, folds, regularization: float, supervised: Optional[float],
) -> Tuple[Dict[str, Any], bool, Optional[np.ndarray]]:
  """Self-training against the supervised head's cross-validated accuracy
  (`supervised`, at `regularization`, on the same folds); also returns the
  self-trained heads' out-of-fold probabilities (None without folds)."""
  decision: Dict[str, Any] = {'images': int(len(training_set.unlabeled))}
  out_of_fold = None
  if not folds:
    decision.update(used=False, reason='a class has a single labeled image: '
                    'cross-validation cannot tell whether the unlabeled images help')
  else:
    self_trained, out_of_fold = training_set.cross_validate(folds, regularization, True)
    used = self_trained >= supervised
    decision.update(
        used=used, cv_accuracy_supervised=supervised, cv_accuracy_self_training=self_trained,
        reason=(f'used: self-training scored {self_trained:.4f} in cross-validation, '
                f'against {supervised:.4f} without' if used else
                f'not used: self-training lowered the cross-validated accuracy '
                f'to {self_trained:.4f}, from {supervised:.4f} without'))
  logging.info('Unlabeled images: %s.', decision['reason'])
  return decision, decision['used'], out_of_fold


def _format(values: Sequence[float]) -> str:
  return ', '.join(f'{value:.4f}' for value in values) or 'not cross-validated'
