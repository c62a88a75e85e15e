"""Accuracy against labels per class, for the run report's "more labels" section.

Every point is a head fitted exactly as the Trainer fits its own (supervised,
at the regularisation cross-validation chose) on part of the labeled train
split and scored on the rest of it: a share of each class drawn at random
REPEATS times for the smaller points, the cross-validation folds for the
largest. The eval split stays out of it, like everything the Trainer does. A
line through the points in log(labels per class) tells what more labels are
likely to add.
"""

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

FRACTIONS = (0.2, 0.4, 0.6)
REPEATS = 3


def _split(labels: np.ndarray, fraction: float,
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """`fraction` of each class's images (at least one) and the rest."""
  train = []
  for members in (np.flatnonzero(labels == c) for c in np.unique(labels)):
    train.append(rng.permutation(members)[:max(1, round(fraction * len(members)))])
  train = np.concatenate(train)
  return train, np.setdiff1d(np.arange(len(labels)), train)


def _point(training_set, splits: Sequence[Tuple[np.ndarray, np.ndarray]],
           regularization: float) -> Dict[str, Any]:
  """Mean and spread over `splits` of the held-out accuracy and class recall."""
  labels, num_classes = training_set.labels, training_set.num_classes
  accuracies, recalls, sizes = [], [], []
  for train, held_out in splits:
    head, _ = training_set.fit(train, regularization, self_training=False)
    predicted = head.probabilities(training_set.views[0, held_out]).argmax(-1)
    right = predicted == labels[held_out]
    accuracies.append(float(np.mean(right)))
    hits = np.bincount(labels[held_out], weights=right, minlength=num_classes)
    totals = np.bincount(labels[held_out], minlength=num_classes)
    recalls.append((hits, totals))
    sizes.append(len(train) / len(np.unique(labels[train])))
  hits, totals = (np.sum(parts, axis=0) for parts in zip(*recalls))
  return {'labels_per_class': float(np.mean(sizes)),
          'accuracy': float(np.mean(accuracies)), 'accuracy_std': float(np.std(accuracies)),
          # Pooled over the splits; None for a class never held out.
          'class_recall': [float(h / t) if t else None for h, t in zip(hits, totals)]}


def measure(training_set, folds, regularization: float, seed: int) -> Dict[str, Any]:
  """The curve of `training_set` (head.TrainingSet, with its cross-validation
  `folds`): its points, smallest first, and the log-linear fit through them
  (`accuracy ≈ intercept + slope × ln(labels per class)`) when it has two."""
  rng = np.random.default_rng(seed)
  points: List[Dict[str, Any]] = []
  for fraction in FRACTIONS:
    points.append(_point(training_set, [_split(training_set.labels, fraction, rng)
                                        for _ in range(REPEATS)], regularization))
  if folds:
    points.append(_point(training_set, folds, regularization))
  curve: Dict[str, Any] = {'points': points, 'repeats': REPEATS,
                           'train_labels_per_class': float(
                               len(training_set.labels) /
                               len(np.unique(training_set.labels)))}
  sizes = np.log([point['labels_per_class'] for point in points])
  if len(np.unique(sizes)) >= 2:
    slope, intercept = np.polyfit(sizes, [point['accuracy'] for point in points], 1)
    curve['fit'] = {'slope': float(slope), 'intercept': float(intercept)}
  return curve


def expected_accuracy(curve: Dict[str, Any], labels_per_class: float) -> float:
  """The log-linear fit's accuracy at `labels_per_class` (capped at 1)."""
  fit = curve['fit']
  return min(1.0, fit['intercept'] + fit['slope'] * float(np.log(labels_per_class)))
