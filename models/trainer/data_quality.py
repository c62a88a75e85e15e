"""The data-quality audit: suspect labels, near-duplicates and outliers, found on
the frozen backbone's cached features before the head is trusted with them.

With a few dozen images per class one wrong label, or one image in both
splits, moves accuracy by points. The Trainer already holds every labeled
image's features, so the audit costs no backbone pass of its own:

- suspect labels: confident learning (Northcutt et al., JAIR 2021, through
  the `cleanlab` library) on out-of-sample probabilities: for train images
  those of the cross-validation fold that held them out, for eval images the
  final head's (fitted on train only). Ranked by how little probability the
  given label got; the suggested label is the most probable class;
- near-duplicates: resized, recompressed, slightly cropped copies that the
  content hash does not catch (near_duplicate_pairs says how), named by
  kind: `conflict` (two labels), `leakage` (train and eval) or `duplicate`;
- outliers: images whose `NEIGHBOURS` nearest labeled images are all far
  (a cat in the shoe folder, a blank scan), flagged when their distance lies
  more than `outlier_mads` robust deviations above the median.

Nothing is changed in the data: the findings are written next to the training
logs (model_run/data_quality/) for the run report and the label queue.
"""

import csv
import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from components.contracts import (DATA_QUALITY_SUMMARY_FILE, NEAR_DUPLICATES_CSV,
                                  OUTLIERS_CSV, SUSPECT_LABELS_CSV)
from models import neighbours
from pipeline.config import DataQualityConfig

SUSPECT_COLUMNS = ['rank', 'source_path', 'split', 'image_id', 'given', 'suggested',
                   'score', 'suggested_probability']
DUPLICATE_COLUMNS = ['kind', 'similarity', 'source_path_a', 'split_a', 'label_a',
                     'source_path_b', 'split_b', 'label_b', 'image_id_a', 'image_id_b']
OUTLIER_COLUMNS = ['rank', 'source_path', 'split', 'image_id', 'label', 'score']
CONFLICT, LEAKAGE, DUPLICATE = 'conflict', 'leakage', 'duplicate'
# Nearest neighbours kept per image: the outlier score averages them, and
# a near-duplicate group larger than this lists some of its pairs only.
NEIGHBOURS = 10
# Mutual nearest neighbours count as near-duplicates by their margin only
# from this similarity up (near_duplicate_pairs).
MUTUAL_FLOOR = 0.8
# Cap of confident learning's per-class thresholds (suspect_labels).
MAX_CONFIDENCE_THRESHOLD = 0.5
# Median absolute deviation to the standard deviation of a normal distribution.
_MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass(frozen=True)
class LabeledImages:
  """The labeled images the audit names, in one order across every array."""
  features: np.ndarray        # [N, D] clean-view features, normalised as the head sees them
  labels: np.ndarray          # [N] class ids
  probabilities: np.ndarray   # [N, classes] out-of-sample
  splits: Sequence[str]       # [N] 'train' or 'eval'
  source_paths: Sequence[str]
  image_ids: Sequence[str]


class DataQualityError(ValueError):
  """Near-duplicates under two labels with `cross_class_duplicates: stop`."""


def suspect_labels(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
  """Indices of images whose given label is likely wrong, most likely first.

  Confident learning counts an image as confidently of class j when its
  probability of j reaches class j's threshold, by default the mean
  probability its own images get. A strong head on easy classes puts that
  near 1, so a lone bag filed under trouser, at p(bag) = 0.9, counted for no
  class and was never listed (a real 47-image run). The thresholds are
  capped at MAX_CONFIDENCE_THRESHOLD: more likely j than not is confident.
  """
  from cleanlab import count, filter as cleanlab_filter  # pylint: disable=g-import-not-at-top
  classes = probabilities.shape[1]
  thresholds = np.array([probabilities[labels == j, j].mean() if np.any(labels == j) else 1.0
                         for j in range(classes)])
  confident_joint = count.compute_confident_joint(
      labels, probabilities, thresholds=np.minimum(thresholds, MAX_CONFIDENCE_THRESHOLD))
  # One process: cleanlab's pool would fork the Trainer's TensorFlow runtime.
  return np.asarray(cleanlab_filter.find_label_issues(
      labels, probabilities, filter_by='prune_by_noise_rate',
      confident_joint=confident_joint, return_indices_ranked_by='self_confidence',
      n_jobs=1), dtype=int)


def nearest_neighbours(features: np.ndarray, k: int = NEIGHBOURS):
  """(similarities, indices) [N, k] of each image's k most similar others by
  cosine similarity, most similar first."""
  return neighbours.nearest(features, features, min(k, len(features) - 1),
                            own=np.arange(len(features)))


def near_duplicate_pairs(similarities: np.ndarray, indices: np.ndarray, threshold: float,
                         margin: Optional[float] = None) -> List[tuple]:
  """(i, j, similarity) with i < j, most similar first, for every neighbour
  pair at or above `threshold`; with `margin`, also every pair of mutual
  nearest neighbours at or above MUTUAL_FLOOR whose similarity exceeds each
  one's next-nearest by `margin`.

  Where a data set's images are all alike (28-pixel clothes on black), an
  altered copy is rarely above a high absolute threshold, yet it is far
  closer to its original than to anything else: with the margin rule 48-60 %
  of planted copies were found at 91-92 % precision, at an absolute 0.90
  alone 20-28 % at 83-88 % (bench/data_quality.py). A group of three or more
  copies has no margin; the absolute threshold catches those.
  """
  pairs = {}
  for i, j in zip(*np.nonzero(similarities >= threshold)):
    a, b = sorted((int(i), int(indices[i, j])))
    pairs[(a, b)] = float(similarities[i, j])
  if margin is not None and similarities.shape[1] > 1:
    nearest, runner_up = indices[:, 0], similarities[:, 1]
    for i, j in enumerate(nearest):
      if (i < j and nearest[j] == i and similarities[i, 0] >= MUTUAL_FLOOR and
          similarities[i, 0] - max(runner_up[i], runner_up[j]) >= margin):
        pairs[(i, int(j))] = float(similarities[i, 0])
  return sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda p: (-p[2], p[:2]))


def outlier_scores(similarities: np.ndarray) -> np.ndarray:
  """Each image's mean cosine distance to its nearest labeled images."""
  return 1.0 - similarities.mean(axis=1)


def robust_threshold(scores: np.ndarray, mads: float) -> float:
  """The score `mads` robust standard deviations above the median."""
  median = float(np.median(scores))
  return median + mads * _MAD_TO_SIGMA * float(np.median(np.abs(scores - median)))


def audit(images: LabeledImages, class_names: Sequence[str], settings: DataQualityConfig,
          output_dir: str) -> Dict[str, Any]:
  """Writes the three lists and data_quality.json into `output_dir`; returns
  the summary. Raises DataQualityError for near-duplicates under two labels
  when settings.cross_class_duplicates is 'stop'."""
  start = time.perf_counter()
  labels, probabilities = images.labels, images.probabilities
  names = np.asarray(class_names, dtype=object)
  suspects = suspect_labels(labels, probabilities)
  suggested = probabilities.argmax(axis=1)
  similarities, neighbour_ids = nearest_neighbours(images.features)
  pairs = near_duplicate_pairs(similarities, neighbour_ids,
                               settings.near_duplicate_similarity,
                               settings.near_duplicate_margin)
  scores = outlier_scores(similarities)
  threshold = robust_threshold(scores, settings.outlier_mads)
  outliers = [int(i) for i in np.argsort(-scores, kind='stable') if scores[i] > threshold]

  def where(i: int) -> List[str]:
    return [images.source_paths[i], images.splits[i]]

  suspect_rows = [
      [rank, *where(i), images.image_ids[i], names[labels[i]], names[suggested[i]],
       f'{1.0 - probabilities[i, labels[i]]:.4f}', f'{probabilities[i, suggested[i]]:.4f}']
      for rank, i in enumerate(suspects, 1)]
  duplicate_rows = [
      [_pair_kind(images, a, b), f'{s:.4f}', *where(a), names[labels[a]],
       *where(b), names[labels[b]], images.image_ids[a], images.image_ids[b]]
      for a, b, s in pairs]
  outlier_rows = [[rank, *where(i), images.image_ids[i], names[labels[i]],
                   f'{scores[i]:.4f}'] for rank, i in enumerate(outliers, 1)]
  tf.io.gfile.makedirs(output_dir)
  _write_csv(os.path.join(output_dir, SUSPECT_LABELS_CSV), SUSPECT_COLUMNS, suspect_rows)
  _write_csv(os.path.join(output_dir, NEAR_DUPLICATES_CSV), DUPLICATE_COLUMNS,
             duplicate_rows)
  _write_csv(os.path.join(output_dir, OUTLIERS_CSV), OUTLIER_COLUMNS, outlier_rows)
  kinds = [row[0] for row in duplicate_rows]
  summary = {
      'images': int(len(labels)),
      'suspect_labels': len(suspect_rows),
      'suspect_labels_by_split': {split: sum(images.splits[i] == split for i in suspects)
                                  for split in sorted(set(images.splits))},
      'near_duplicates': {kind: kinds.count(kind) for kind in (CONFLICT, LEAKAGE, DUPLICATE)},
      'near_duplicate_similarity': settings.near_duplicate_similarity,
      'near_duplicate_margin': settings.near_duplicate_margin,
      'outliers': len(outlier_rows),
      'outlier_threshold': threshold,
      'cross_class_duplicates': settings.cross_class_duplicates,
      'seconds': time.perf_counter() - start,
  }
  write_summary(output_dir, summary)
  conflicts = [row for row in duplicate_rows if row[0] == CONFLICT]
  if conflicts and settings.cross_class_duplicates == 'stop':
    raise DataQualityError(
        f'{len(conflicts)} near-duplicate pair(s) under two labels (e.g. '
        f'{conflicts[0][2]} as {conflicts[0][4]} and {conflicts[0][5]} as '
        f'{conflicts[0][7]}, similarity {conflicts[0][1]}); fix the labels or set '
        f'data_quality.cross_class_duplicates=warn. All pairs: '
        f'{os.path.join(output_dir, NEAR_DUPLICATES_CSV)}')
  return summary


def _pair_kind(images: LabeledImages, a: int, b: int) -> str:
  if images.labels[a] != images.labels[b]:
    return CONFLICT
  return LEAKAGE if images.splits[a] != images.splits[b] else DUPLICATE


def _write_csv(path: str, columns: List[str], rows: List[List[Any]]) -> None:
  with tf.io.gfile.GFile(path, 'w') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(rows)


def write_summary(directory: str, summary: Dict[str, Any]) -> None:
  tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(os.path.join(directory, DATA_QUALITY_SUMMARY_FILE), 'w') as f:
    json.dump(summary, f, indent=1)


def describe(summary: Dict[str, Any]) -> str:
  """One line for the run summary: what the audit found."""
  if 'skipped' in summary:
    return f'not audited: {summary["skipped"]}'
  pairs = summary['near_duplicates']
  return (f'{summary["suspect_labels"]} suspect labels, '
          f'{sum(pairs.values())} near-duplicate pairs ({pairs[LEAKAGE]} across train/eval, '
          f'{pairs[CONFLICT]} under two labels), {summary["outliers"]} outliers '
          f'in {summary["images"]} labeled images')

