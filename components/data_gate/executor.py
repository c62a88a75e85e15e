"""Executor of DataGate: every dataset-level problem, found at once, in one error.

Images per class and split come from StatisticsGen's `label` rank histogram
(complete up to 1000 classes); when it is truncated the examples' labels are
counted instead. Images under two labels come from ImageExampleGen's
`label_conflicts.jsonl`. The findings are written to `data_gate.json` in the
output artifact (a standard ExampleAnomalies, see component.py); problems
then fail the execution with a `DataGateError` whose message lists them all.

The `unlabeled` split (data.unlabeled_path), when there is one, takes no part
in the class checks; ExampleValidator skips it, so the gate validates it
against the schema's UNLABELED environment and refuses it when it is empty.
"""

import collections
import json
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import artifact_readers
from components import example_splits
from components import label_schema
from components.contracts import (ANOMALIES_FILE, DATA_GATE_REPORT_FILE, EVAL_SPLIT,
                                  QUARANTINE_FILE, TRAIN_SPLIT, UNLABELED_ENVIRONMENT,
                                  UNLABELED_LABEL, UNLABELED_SPLIT)
from components.data_gate import spec

# Lines per rule in the error message; data_gate.json keeps them all.
MAX_LINES_PER_RULE = 20
_HEADER = 'The data set cannot be used for training; the data gate found'
_BULLET = '  - '
_FOOTER = ('Fix the image folders (or the schema, data.schema_file, or '
           'data.min_images_per_class) and run again.')


class DataGateError(ValueError):
  """The data gate's verdict: every problem, one per `  - ` line."""

  def __init__(self, message: str):
    super().__init__(message)

  @classmethod
  def from_problems(cls, problems: List[str]) -> 'DataGateError':
    return cls('\n'.join([f'{_HEADER} {len(problems)} problem(s):',
                          *[_BULLET + problem for problem in problems], _FOOTER]))

  @property
  def message(self) -> str:
    """The gate's text alone (a runner may have appended where it ran)."""
    text = str(self.args[0]) if self.args else ''
    start = text.find(_HEADER)
    end = text.find(_FOOTER, max(start, 0))
    return text[max(start, 0):end + len(_FOOTER)] if end >= 0 else text

  @property
  def problems(self) -> List[str]:
    return [line[len(_BULLET):] for line in self.message.splitlines()
            if line.startswith(_BULLET)]

  @classmethod
  def find(cls, error: Optional[BaseException]) -> Optional['DataGateError']:
    """The gate's error behind `error` (itself, a cause, or a re-raised copy
    whose text still holds the gate's message), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
      seen.add(id(error))
      if isinstance(error, cls):
        return cls(error.message)
      if _HEADER in str(error) and _FOOTER in str(error):
        return cls(cls(str(error)).message)
      error = error.__cause__ or error.__context__
    return None


def _per_split(label: str, counts: Dict[str, Dict[str, int]]) -> str:
  return ', '.join(f'{split} {counts[split].get(label, 0)}' for split in counts)


def _capped(lines: List[str], what: str) -> List[str]:
  if len(lines) <= MAX_LINES_PER_RULE:
    return lines
  return lines[:MAX_LINES_PER_RULE] + [
      f'... and {len(lines) - MAX_LINES_PER_RULE} more {what} (all in {DATA_GATE_REPORT_FILE})']


def find_problems(classes: List[str], counts: Dict[str, Dict[str, int]],
                  conflicts: List[Dict[str, Any]],
                  min_images_per_class: int) -> List[str]:
  """Every reason the data cannot train and evaluate a classifier over `classes`.

  `counts`: split -> label -> images; `conflicts`: label_conflicts.jsonl's rows.
  """
  totals: Dict[str, int] = collections.Counter()
  for split_counts in counts.values():
    totals.update(split_counts)
  train = counts.get(TRAIN_SPLIT, {})
  evaluation = counts.get(EVAL_SPLIT, {})
  domain = set(classes)
  problems: List[str] = []

  trained = [name for name in classes if train.get(name, 0) > 0]
  if len(trained) < 2:
    have = (', '.join(f'{name!r}: {train[name]} images' for name in trained)
            if trained else 'none')
    problems.append(f'fewer than two classes have training images ({have}); '
                    'a classifier needs at least two')

  unknown = sorted(label for label in totals if label not in domain)
  problems += _capped([
      f'label {label!r} is not in the schema\'s label domain {classes} '
      f'({totals[label]} images: {_per_split(label, counts)}); add it to the '
      'schema or remove its folder' for label in unknown], 'unknown labels')

  problems += _capped([
      f'class {name!r} has {totals[name]} images ({_per_split(name, counts)}), '
      f'fewer than data.min_images_per_class = {min_images_per_class}'
      if totals.get(name) else
      f'class {name!r} has no images: its folder {name}/ is empty or missing, '
      f'or every file in it was quarantined ({QUARANTINE_FILE})'
      for name in classes if totals.get(name, 0) < min_images_per_class],
      'small classes')

  if EVAL_SPLIT in counts:
    problems += _capped([
        f'class {name!r} has {train[name]} train images but none in the eval '
        'split, so the model cannot be evaluated on it'
        for name in classes if train.get(name, 0) > 0 and not evaluation.get(name)],
        'classes missing from eval')
  problems += _capped([
      f'class {name!r} has {evaluation[name]} eval images but none in the train '
      'split' for name in classes if evaluation.get(name, 0) > 0 and not train.get(name)],
      'classes missing from train')

  problems += _capped([
      f'the same image (sha256 {conflict["image_id"][:12]}...) is labeled '
      f'{" and ".join(repr(label) for label in conflict["labels"])}: '
      f'{", ".join(conflict["paths"])}' for conflict in conflicts],
      'images under two labels')
  return problems


def unlabeled_problems(found: Dict[str, int], statistics_uri: str,
                       schema: schema_pb2.Schema) -> List[str]:
  """Why the unlabeled split (`found`: label -> images) cannot be used: it has
  no image, it holds a real label, or its statistics break the schema in the
  UNLABELED environment. The `label` statistics (the placeholder's) are left
  out of that check: TFDV reports a present column the environment excludes."""
  if not sum(found.values()):
    return ['the unlabeled folder (data.unlabeled_path) gave no images: it is '
            'empty or every file in it was quarantined (reasons in quarantine.jsonl)']
  problems = [f'the unlabeled split holds {found[label]} images labeled {label!r}; '
              f'unlabeled images carry only the placeholder label {UNLABELED_LABEL!r}'
              for label in sorted(found) if label != UNLABELED_LABEL]
  if UNLABELED_ENVIRONMENT not in schema.default_environment:
    return problems + [
        f'the schema has no {UNLABELED_ENVIRONMENT} environment to validate the '
        'unlabeled images in; add default_environment: "LABELED", '
        f'default_environment: "{UNLABELED_ENVIRONMENT}" and, in the label feature, '
        f'not_in_environment: "{UNLABELED_ENVIRONMENT}" (see schema/schema.pbtxt)']
  stats = example_splits.read_statistics(statistics_uri, UNLABELED_SPLIT)
  for dataset in stats.datasets:
    kept = [feature for feature in dataset.features if not example_splits.is_label(feature)]
    del dataset.features[:]
    dataset.features.extend(kept)
  anomalies = tfdv.validate_statistics(stats, schema, environment=UNLABELED_ENVIRONMENT)
  found_anomalies = [f'feature {name!r}: {info.description}'
                     for name, info in sorted(anomalies.anomaly_info.items())]
  if anomalies.HasField('dataset_anomaly_info'):
    found_anomalies.append(anomalies.dataset_anomaly_info.description)
  return problems + _capped([
      f'the unlabeled images do not match the schema: {anomaly.strip()}'
      for anomaly in found_anomalies], 'anomalies of the unlabeled split')


class Executor(base_executor.BaseExecutor):
  """Checks the data set; writes data_gate.json; fails on any problem."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    statistics = artifact_utils.get_single_instance(input_dict[spec.STATISTICS_KEY])
    schema_uri = artifact_utils.get_single_uri(input_dict[spec.SCHEMA_KEY])
    result = artifact_utils.get_single_instance(output_dict[spec.RESULT_KEY])
    min_images = int(exec_properties[spec.MIN_IMAGES_PER_CLASS_KEY])

    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema_uri))
    classes = label_schema.domain(schema)
    splits = artifact_utils.decode_split_names(examples.split_names)
    counts, counts_source, why = example_splits.count(statistics.uri, examples.uri, splits)
    if why:
      logging.info('Counting labels in the examples: %s', why)
    unlabeled = counts.pop(UNLABELED_SPLIT, None)    # None: no unlabeled folder
    conflicts = artifact_readers.label_conflicts(examples.uri)
    notes = [] if conflicts is not None else [
        'images under two labels were not checked: the examples were made before '
        'ImageExampleGen wrote label_conflicts.jsonl (rerun with '
        'pipeline.enable_cache=false to check them)']
    problems = find_problems(classes, counts, conflicts or [], min_images)
    if unlabeled is not None:
      problems += unlabeled_problems(unlabeled, statistics.uri, schema)

    report = {
        'passed': not problems,
        'problems': problems,
        'notes': notes,
        'classes': classes,
        'min_images_per_class': min_images,
        'images_per_class': counts,
        'unlabeled_images': None if unlabeled is None else sum(unlabeled.values()),
        'counts_from': counts_source,
        'label_conflicts': conflicts,
        'examples_uri': examples.uri,
    }
    with tf.io.gfile.GFile(os.path.join(result.uri, DATA_GATE_REPORT_FILE), 'w') as f:
      json.dump(report, f, indent=1, sort_keys=True)
    result.split_names = artifact_utils.encode_split_names(splits)
    if not problems:    # what ExampleAnomalies readers expect: none, per split
      for split in splits:
        io_utils.write_bytes_file(
            os.path.join(artifact_utils.get_split_uri([result], split), ANOMALIES_FILE),
            anomalies_pb2.Anomalies().SerializeToString())
    result.set_int_custom_property('passed', int(not problems))
    result.set_int_custom_property('problem_count', len(problems))
    result.set_int_custom_property('class_count', len(classes))
    result.set_int_custom_property(
        'image_count', sum(sum(split.values()) for split in counts.values()))
    for note in notes:
      logging.warning('Data gate: %s', note)
    if problems:
      raise DataGateError.from_problems(problems)
    logging.info('Data gate passed: %d classes, images per split %s%s', len(classes),
                 {split: sum(c.values()) for split, c in counts.items()},
                 '' if unlabeled is None else f', {sum(unlabeled.values())} unlabeled')


