"""Reads an Evaluator output into a plain summary for records and run reports."""

from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma

from components.evaluator import eval_config

_BASELINE = 'baseline'


def _metric_value(value) -> Optional[float]:
  return value.double_value.value if value.HasField('double_value') else None


def describe_failure(failure) -> str:
  """One line a person can act on; TFMA leaves `message` empty for an
  ordinary threshold miss and keeps the facts in the other fields."""
  if failure.message.strip():
    return ' '.join(failure.message.split())
  name = failure.metric_key.name
  value = _metric_value(failure.metric_value)
  shown = 'n/a' if value is None else f'{value:.4f}'
  threshold = failure.metric_threshold
  if failure.metric_key.is_diff and threshold.HasField('change_threshold'):
    allowed = threshold.change_threshold.absolute.value
    return (f'{name} changed by {shown} against the baseline; '
            f'the change allowed is at least {allowed:+.4f}')
  if threshold.HasField('value_threshold'):
    bounds = threshold.value_threshold
    if bounds.HasField('lower_bound'):
      return f'{name} {shown} is below the minimum {bounds.lower_bound.value:.4f}'
    if bounds.HasField('upper_bound'):
      return f'{name} {shown} is above the maximum {bounds.upper_bound.value:.4f}'
  return f'{name} {shown} fails its threshold'


def read_evaluation(evaluation_uri: str, class_names: List[str]) -> Dict[str, Any]:
  """The overall slice's metrics, per-class precision/recall, confusion matrix
  and the blessing decision with the reasons a model was refused.
  """
  summary: Dict[str, Any] = {
      'accuracy': None, 'example_count': None, 'baseline_accuracy': None,
      'per_class': {name: {} for name in class_names},
  }
  for metrics in tfma.load_metrics(evaluation_uri):
    if metrics.slice_key.single_slice_keys:
      continue
    for item in metrics.metric_keys_and_values:
      key, value = item.key, _metric_value(item.value)
      if value is None or key.is_diff:
        continue
      if key.sub_key.HasField('class_id'):
        class_id = key.sub_key.class_id.value
        if key.model_name != _BASELINE and class_id < len(class_names):
          summary['per_class'][class_names[class_id]][key.name] = value
      elif key.name == eval_config.ACCURACY:
        field = 'baseline_accuracy' if key.model_name == _BASELINE else 'accuracy'
        summary[field] = value
      elif key.name == eval_config.EXAMPLE_COUNT and key.model_name != _BASELINE:
        summary['example_count'] = int(value)

  matrix = [[0] * len(class_names) for _ in class_names]
  for plots in tfma.load_plots(evaluation_uri):
    if plots.slice_key.single_slice_keys:
      continue
    for item in plots.plot_keys_and_values:
      if item.key.model_name == _BASELINE:
        continue
      for entry in item.value.multi_class_confusion_matrix_at_thresholds.matrices[:1]:
        for cell in entry.entries:
          if max(cell.actual_class_id, cell.predicted_class_id) < len(class_names):
            matrix[cell.actual_class_id][cell.predicted_class_id] = int(
                cell.num_weighted_examples)
  summary['confusion_matrix'] = matrix

  validation = tfma.load_validation_result(evaluation_uri)
  summary['blessed'] = bool(validation.validation_ok)
  summary['failures'] = [
      describe_failure(failure)
      for per_slice in validation.metric_validations_per_slice
      for failure in per_slice.failures
  ]
  return summary
