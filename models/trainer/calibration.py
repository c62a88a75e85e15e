"""Calibrated confidence: temperature scaling, and how far confidence is from
accuracy (expected calibration error, reliability bins).

A regularised softmax head on few labels is rarely calibrated: its top
probability says more (or less) than how often it is right. Temperature
scaling (Guo et al. 2017, "On calibration of modern neural networks") divides
the logits by one number T fitted to minimise the log-loss of held-out
predictions; the top class never changes, only how sure the model says it is.
The held-out predictions are the head's out-of-fold probabilities on the
labeled train split (head.fit_head), never the gate's eval split, which then
measures the calibration on images it was not fitted on (the run report).
"""

import dataclasses
from typing import List

import numpy as np
from scipy import optimize, special

# The fitted temperature stays in this range: beyond it the held-out set is
# too small or too separable to say anything (all right or all wrong).
TEMPERATURE_RANGE = (0.05, 20.0)
# Equal-width confidence bins of the calibration error and the reliability diagram.
BINS = 15


def _log_probabilities(probabilities: np.ndarray) -> np.ndarray:
  return np.log(np.clip(probabilities, 1e-12, 1.0))


def rescale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(logits / T) from softmax(logits): log-probabilities are the
  logits up to a per-row constant, which softmax ignores."""
  return special.softmax(_log_probabilities(probabilities) / temperature, axis=-1)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
  """The T in TEMPERATURE_RANGE that minimises the log-loss of
  rescale(probabilities, T) on `labels`."""
  log_probabilities = _log_probabilities(probabilities)
  rows = np.arange(len(labels))

  def log_loss(log_temperature):
    scaled = log_probabilities / np.exp(log_temperature)
    return float(np.mean(special.logsumexp(scaled, axis=-1) - scaled[rows, labels]))

  result = optimize.minimize_scalar(log_loss, bounds=np.log(TEMPERATURE_RANGE),
                                    method='bounded')
  return float(np.exp(result.x))


@dataclasses.dataclass(frozen=True)
class ReliabilityBin:
  low: float              # confidence range [low, high)
  high: float
  images: int
  confidence: float       # mean top probability in the bin (0 when empty)
  accuracy: float         # fraction right in the bin (0 when empty)


def reliability(probabilities: np.ndarray, labels: np.ndarray,
                bins: int = BINS) -> List[ReliabilityBin]:
  """Images binned by top probability: each bin's mean confidence and accuracy."""
  confidence = probabilities.max(axis=-1)
  correct = probabilities.argmax(axis=-1) == labels
  edges = np.linspace(0.0, 1.0, bins + 1)
  index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
  result = []
  for b in range(bins):
    members = index == b
    count = int(members.sum())
    result.append(ReliabilityBin(
        float(edges[b]), float(edges[b + 1]), count,
        float(confidence[members].mean()) if count else 0.0,
        float(correct[members].mean()) if count else 0.0))
  return result


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = BINS) -> float:
  """Mean |accuracy - confidence| over the reliability bins, weighted by size."""
  total = len(labels)
  return float(sum(b.images * abs(b.accuracy - b.confidence)
                   for b in reliability(probabilities, labels, bins)) / max(total, 1))
