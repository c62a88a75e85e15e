"""The facts a run report shows, gathered once as plain values (no plots, no HTML).

MLMD facts come from `run_summary` (its single reader); the rest is read from
the artifacts it points at: label counts per split (StatisticsGen's output, or
the examples themselves when statistics are missing or truncated), the
quarantine list, the training history saved next to the SavedModel, and the
eval split scored by the candidate model (`scoring`).

A fact that cannot be read (an artifact missing, an older model without a
history file, ...) is left empty and its reason added to `Facts.missing`, so
the report is still written; programming errors are not caught here.
"""

import contextlib
import dataclasses
import datetime
import math
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from tfx.utils import path_utils

from components import artifact_readers
from components import example_splits
from components.contracts import (EVAL_SPLIT, NEAR_DUPLICATES_CSV, OUTLIERS_CSV,
                                  SUSPECT_LABELS_CSV, TRAIN_SPLIT, UNLABELED_SPLIT)
from models import signatures
from pipeline import dag, schema
from pipeline.config import Config, to_dict
from pipeline.report import scoring
from pipeline.run_summary import RunSummary
from registry import layout

# z for a two-sided 95% interval.
_Z95 = 1.959964
# Errors that mean "this artifact is missing or unreadable", not a bug.
READ_ERRORS = (OSError, ValueError, KeyError, tf.errors.OpError)

BLESSED, NOT_BLESSED, NOT_EVALUATED = 'BLESSED', 'NOT BLESSED', 'NOT EVALUATED'


@dataclasses.dataclass
class ThresholdCheck:
  """One rule of the Evaluator's quality gate, as applied to this run."""
  name: str
  rule: str                 # e.g. 'accuracy >= 0.6000'
  passed: Optional[bool]    # None: the rule was not applied (no baseline yet)
  detail: str


@dataclasses.dataclass
class DataQuality:
  """The Trainer's data-quality audit: its summary and the top of each list."""
  summary: Dict[str, Any]              # data_quality.json
  directory: str                       # where the full lists are
  suspects: List[Dict[str, str]]       # rows of suspect_labels.csv, most likely first
  duplicates: List[Dict[str, str]]     # rows of near_duplicates.csv
  outliers: List[Dict[str, str]]       # rows of outliers.csv
  images: Dict[str, bytes]             # image_id -> encoded image, for thumbnails


@dataclasses.dataclass
class Facts:
  summary: RunSummary
  config: Dict[str, Any]
  started: str                          # when the run started, UTC
  decision: str                         # BLESSED, NOT BLESSED, NOT EVALUATED
  class_names: List[str]                # the model's classes, in id order
  intended_classes: List[str]           # the schema's label domain
  image_size: int                       # model input, pixels
  fixed_split: bool                     # the run took train/ + eval/ folders, else stratified
  split_counts: Dict[str, Dict[str, int]]  # split -> class -> images (ordered)
  counts_source: str                    # where split_counts come from
  quarantine: List[Dict[str, str]]      # {'path', 'reason'}
  history: Optional[Dict[str, Any]]     # training_history.json
  checks: List[ThresholdCheck]
  accuracy_interval: Optional[Tuple[float, float]]  # 95% Wilson
  baseline_version: Optional[int]       # registry version of the baseline
  scoring: Optional[scoring.Scoring]    # the eval split scored again
  unlabeled_count: Optional[int] = None  # images of the unlabeled split, if any
  data_quality: Optional[DataQuality] = None
  missing: List[str] = dataclasses.field(default_factory=list)

  @property
  def evaluation(self) -> Dict[str, Any]:
    return self.summary.evaluation


def wilson_interval(successes: int, n: int, z: float = _Z95) -> Tuple[float, float]:
  """Wilson score interval of a binomial proportion (sound for small n and p near 1)."""
  if n <= 0:
    return 0.0, 1.0
  p = successes / n
  denominator = 1 + z * z / n
  center = (p + z * z / (2 * n)) / denominator
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
  return max(0.0, center - half), min(1.0, center + half)


def read_data_quality(directory: str, examples_uri: str, limit: int) -> Optional[DataQuality]:
  """The audit's summary and the first `limit` rows of each list, with their
  images read back from the examples; None when the run made no audit."""
  summary = artifact_readers.data_quality_summary(directory)
  if not summary or 'skipped' in summary:
    return DataQuality(summary, directory, [], [], [], {}) if summary else None
  lists = [(artifact_readers.data_quality_list(directory, name) or [])[:limit]
           for name in (SUSPECT_LABELS_CSV, NEAR_DUPLICATES_CSV, OUTLIERS_CSV)]
  suspects, duplicates, outliers = lists
  wanted = {row['image_id'] for row in suspects + outliers}
  wanted |= {row[key] for row in duplicates for key in ('image_id_a', 'image_id_b')}
  _, images = example_splits.ids_and_images(examples_uri, [TRAIN_SPLIT, EVAL_SPLIT],
                                            {image_id.encode() for image_id in wanted})
  return DataQuality(summary, directory, suspects, duplicates, outliers,
                     {image_id.decode(): image for image_id, image in images.items()})


def threshold_checks(evaluation: Dict[str, Any], min_accuracy: float,
                     max_accuracy_drop: float) -> List[ThresholdCheck]:
  """The gate's two rules (docs/design.md), each with pass/fail for this run."""
  accuracy = evaluation.get('accuracy')
  baseline = evaluation.get('baseline_accuracy')
  if accuracy is None:
    return []
  checks = [ThresholdCheck(
      'minimum accuracy', f'accuracy >= {min_accuracy:.4f} (evaluation.min_accuracy)',
      accuracy >= min_accuracy, f'accuracy {accuracy:.4f}')]
  if baseline is None:
    checks.append(ThresholdCheck(
        'no regression', f'accuracy >= baseline - {max_accuracy_drop:.4f} '
        '(evaluation.max_accuracy_drop)', None, 'no blessed baseline yet'))
  else:
    bound = baseline - max_accuracy_drop
    checks.append(ThresholdCheck(
        'no regression', f'accuracy >= baseline {baseline:.4f} - '
        f'{max_accuracy_drop:.4f} = {bound:.4f} (evaluation.max_accuracy_drop)',
        # TFMA compares the difference; allow for its float rounding.
        accuracy - baseline >= -max_accuracy_drop - 1e-9,
        f'accuracy {accuracy:.4f}, {accuracy - baseline:+.4f} vs baseline'))
  return checks


def decision(summary: RunSummary) -> str:
  if summary.blessed is None:
    return NOT_EVALUATED
  return BLESSED if summary.blessed else NOT_BLESSED


def low_recall_classes(evaluation: Dict[str, Any], bound: float) -> List[Tuple[str, float]]:
  """Classes whose recall is below `bound`, worst first."""
  recalls = [(name, metrics['recall'])
             for name, metrics in evaluation.get('per_class', {}).items()
             if metrics.get('recall') is not None]
  return sorted([item for item in recalls if item[1] < bound], key=lambda item: item[1])


def top_confusions(matrix: List[List[int]], class_names: List[str],
                   limit: int = 3) -> List[Tuple[str, str, int]]:
  """The most frequent (true, predicted) mistakes."""
  cells = [(class_names[i], class_names[j], count)
           for i, row in enumerate(matrix) for j, count in enumerate(row)
           if i != j and count > 0]
  return sorted(cells, key=lambda cell: -cell[2])[:limit]


def ordered_counts(counts: Dict[str, Dict[str, int]],
                   class_names: List[str]) -> Dict[str, Dict[str, int]]:
  """Splits train first, classes in id order (unknown labels after them)."""
  ordered = {}
  for split in sorted(counts, key=lambda name: (name != 'train', name)):
    names = [n for n in class_names if n in counts[split]]
    names += sorted(set(counts[split]) - set(names))
    ordered[split] = {name: counts[split][name] for name in names}
  return ordered


def gather(config: Config, summary: RunSummary, gallery_size: int = 12) -> Facts:
  """Every fact of the report, for the run `summary` describes."""
  missing: List[str] = []

  def attempt(what: str, read, *args):
    try:
      return read(*args)
    except READ_ERRORS as error:
      missing.append(f'{what}: {type(error).__name__}: {error}')
      return None

  intended_classes = attempt('classes (schema)', schema.class_names,
                             config.data.schema_file) or []
  # The model's classes (the transform graph's vocabulary) when evaluated.
  class_names = list(summary.evaluation.get('per_class', {})) or intended_classes

  split_counts, counts_source, unlabeled_count = None, '', None
  if summary.examples_uri:
    counted = attempt('images per class', example_splits.count, summary.statistics_uri or '',
                      summary.examples_uri, example_splits.split_names(summary.examples_uri))
    if counted:
      split_counts, source, why = counted
      unlabeled = split_counts.pop(UNLABELED_SPLIT, None)    # no classes to count
      unlabeled_count = None if unlabeled is None else sum(unlabeled.values())
      counts_source = {example_splits.FROM_STATISTICS: 'statistics (StatisticsGen)',
                       example_splits.FROM_EXAMPLES: 'examples (ImageExampleGen)'}[source]
      if why:
        missing.append(f'label statistics, counted from the examples instead: {why}')

  quarantine: List[Dict[str, str]] = []
  if summary.examples_uri:
    quarantine = attempt('quarantine list', artifact_readers.quarantine, summary.examples_uri) or []

  image_size = dag.image_size(config)
  history = scored = None
  if summary.model_uri:
    model_dir = path_utils.serving_model_path(summary.model_uri)
    history = attempt('training history', artifact_readers.training_history, model_dir)
    if summary.examples_uri and class_names:
      with contextlib.ExitStack() as model_loaded:
        # One load of the SavedModel, for the scoring and the heatmaps.
        model = attempt('eval split scoring', model_loaded.enter_context,
                        signatures.loaded_session(model_dir))
        if model:
          scored = attempt('eval split scoring', scoring.score_split, model,
                           example_splits.split_files(summary.examples_uri, EVAL_SPLIT),
                           class_names, gallery_size)
        if scored:
          scored = attempt('Grad-CAM heatmaps', scoring.explain, model, scored,
                           image_size) or scored
  else:
    missing.append('model: the run has no Trainer model')

  audit = None
  if summary.data_quality_dir and summary.examples_uri:
    audit = attempt('data-quality audit', read_data_quality, summary.data_quality_dir,
                    summary.examples_uri, gallery_size)

  evaluation = summary.evaluation
  interval = None
  if evaluation.get('accuracy') is not None and evaluation.get('example_count'):
    n = evaluation['example_count']
    interval = wilson_interval(round(evaluation['accuracy'] * n), n)

  baseline_version = None
  if summary.baseline_model_uri:
    baseline_version = attempt('baseline registry version', layout.find_version,
                               config.pipeline.registry, config.pipeline.model_name,
                               summary.baseline_model_uri)

  started = (datetime.datetime.fromtimestamp(summary.started_at, datetime.timezone.utc)
             .strftime('%Y-%m-%d %H:%M:%S UTC') if summary.started_at else 'unknown')
  return Facts(
      summary=summary, config=to_dict(config), started=started,
      decision=decision(summary), class_names=class_names,
      intended_classes=intended_classes,
      fixed_split=bool(summary.fixed_split),
      image_size=image_size,
      split_counts=ordered_counts(split_counts or {}, class_names),
      counts_source=counts_source, unlabeled_count=unlabeled_count,
      quarantine=quarantine, history=history,
      checks=threshold_checks(evaluation, config.evaluation.min_accuracy,
                              config.evaluation.max_accuracy_drop),
      accuracy_interval=interval, baseline_version=baseline_version,
      scoring=scored, data_quality=audit, missing=missing)
