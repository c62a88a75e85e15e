"""What the last run did, read back from the ML Metadata store.

The store is the source of truth for every orchestrator: which components ran
or were served from cache and for how long, what ExampleGen quarantined, which
anomalies the validator found, whether the Evaluator blessed the model and
which registry version the Pusher published (and, from that version's
record, which TFLite models it holds).
"""

import contextlib
import dataclasses
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import artifact_readers
from components import contracts
from components.evaluator import results
from components.label_queue import spec as label_queue_spec
from models.trainer import data_quality
from pipeline import metadata
from registry import layout

DATA_GATE_NODE = 'DataGate'


@dataclasses.dataclass
class ComponentRun:
  node_id: str
  state: str          # COMPLETE, CACHED, FAILED, ...
  seconds: float


@dataclasses.dataclass
class RunSummary:
  run_id: str
  components: List[ComponentRun]
  quarantined: int = 0
  quarantine_report: Optional[str] = None
  anomalies: List[str] = dataclasses.field(default_factory=list)
  blessed: Optional[bool] = None
  evaluation: Dict[str, Any] = dataclasses.field(default_factory=dict)
  pushed_version: Optional[int] = None
  pushed_to: Optional[str] = None
  # When the run started, in seconds since the epoch.
  started_at: Optional[float] = None
  # The artifacts the facts above come from (None when the run has none).
  examples_uri: Optional[str] = None       # ExampleGen's raw examples
  data_fingerprint: Optional[str] = None   # ExampleGen's input files fingerprint
  # Whether ExampleGen took the train/ and eval/ folders as its splits, as
  # the run's input_config says (not today's data folder); None without examples.
  fixed_split: Optional[bool] = None
  statistics_uri: Optional[str] = None     # StatisticsGen's output
  model_uri: Optional[str] = None          # the candidate the Evaluator judged
  baseline_model_uri: Optional[str] = None  # the blessed model it was compared to
  evaluation_uri: Optional[str] = None
  # Set by the runner once it has written the run report; not an MLMD fact.
  report_path: Optional[str] = None
  # The data gate (components/data_gate/): its output when it passed, notes
  # (checks it could not make), and the problems that failed the run (set by
  # the runner from the gate's error: a failed execution publishes no output).
  data_gate_uri: Optional[str] = None
  data_gate_notes: List[str] = dataclasses.field(default_factory=list)
  data_gate_problems: List[str] = dataclasses.field(default_factory=list)
  # The LabelQueue's output folder (label_queue.csv, contact_sheet.png) and
  # how many images it queued, when the run had unlabeled images.
  label_queue_uri: Optional[str] = None
  label_queue_size: int = 0
  labels_to_check: int = 0     # of label_queue_size: the audit's suspect labels
  # The Trainer's data-quality audit (models/trainer/data_quality.py):
  # its folder in the Trainer's model_run, and its data_quality.json.
  data_quality_dir: Optional[str] = None
  data_quality: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # The pushed version's TFLite models (`exports` of its model_record.json:
  # components/registry_pusher/edge_exports.py); None without one.
  edge_exports: Optional[Dict[str, Any]] = None


def _anomalies(uri: str) -> List[str]:
  found = []
  for split in sorted(os.listdir(uri)):
    path = os.path.join(uri, split, contracts.ANOMALIES_FILE)
    if not os.path.exists(path):
      continue
    anomalies = anomalies_pb2.Anomalies()
    with open(path, 'rb') as f:
      anomalies.ParseFromString(f.read())
    for feature, info in sorted(anomalies.anomaly_info.items()):
      found.append(f'{split}: feature {feature!r}: {info.description}')
  return found


class _Output(NamedTuple):
  """One output artifact of an execution, with the execution: its inputs by
  key tell which model the Evaluator judged (even when the Trainer's came from
  cache), its exec properties how ExampleGen split the data."""
  node: str
  key: str                # 'examples', 'statistics', 'model', 'queue', ...
  artifact: metadata_store_pb2.Artifact
  inputs: Dict[str, metadata_store_pb2.Artifact]
  execution: metadata_store_pb2.Execution


@dataclasses.dataclass
class _Reading:
  """What summarize fills: the summary, and the Transform's class names that
  the evaluation is read with once every output is seen."""
  summary: RunSummary
  class_names: List[str] = dataclasses.field(default_factory=list)


def _examples(reading: _Reading, out: _Output) -> None:
  if not out.node.endswith('ExampleGen'):
    return
  summary, props = reading.summary, out.artifact.custom_properties
  summary.quarantined = props[contracts.QUARANTINED_COUNT_PROPERTY].int_value
  summary.quarantine_report = os.path.join(out.artifact.uri, contracts.QUARANTINE_FILE)
  summary.examples_uri = out.artifact.uri
  summary.data_fingerprint = props[
      example_gen_utils.FINGERPRINT_PROPERTY_NAME].string_value or None
  input_config = proto_utils.json_to_proto(out.execution.custom_properties[
      standard_component_specs.INPUT_CONFIG_KEY].string_value, example_gen_pb2.Input())
  summary.fixed_split = ({split.name for split in input_config.splits} ==
                         {contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT})


def _statistics(reading: _Reading, out: _Output) -> None:
  if out.key == standard_component_specs.STATISTICS_KEY:
    reading.summary.statistics_uri = out.artifact.uri


def _example_anomalies(reading: _Reading, out: _Output) -> None:
  """The DataGate's verdict, or ExampleValidator's anomalies."""
  if out.node == DATA_GATE_NODE:
    reading.summary.data_gate_uri = out.artifact.uri
    reading.summary.data_gate_notes = artifact_readers.data_gate_report(
        out.artifact.uri).get('notes', [])
  else:
    reading.summary.anomalies = _anomalies(out.artifact.uri)


def _model(reading: _Reading, out: _Output) -> None:
  if out.key == standard_component_specs.MODEL_KEY:     # the Trainer's
    reading.summary.model_uri = out.artifact.uri


def _blessing(reading: _Reading, out: _Output) -> None:
  reading.summary.blessed = out.artifact.custom_properties['blessed'].int_value == 1


def _evaluation(reading: _Reading, out: _Output) -> None:
  summary = reading.summary
  summary.evaluation_uri = out.artifact.uri
  model = out.inputs.get(standard_component_specs.MODEL_KEY)
  baseline = out.inputs.get(standard_component_specs.BASELINE_MODEL_KEY)
  if model is not None:
    summary.model_uri = model.uri
  if baseline is not None:
    summary.baseline_model_uri = baseline.uri


def _pushed(reading: _Reading, out: _Output) -> None:
  props, summary = out.artifact.custom_properties, reading.summary
  if props['pushed'].int_value != 1:
    return
  summary.pushed_to = props['pushed_destination'].string_value
  summary.pushed_version = int(props['pushed_version'].string_value)
  with contextlib.suppress(FileNotFoundError):   # a version deleted since
    summary.edge_exports = layout.read_record(summary.pushed_to).get('exports')


def _label_queue(reading: _Reading, out: _Output) -> None:
  if out.key != label_queue_spec.QUEUE_KEY:
    return
  props, summary = out.artifact.custom_properties, reading.summary
  summary.label_queue_uri = out.artifact.uri
  summary.label_queue_size = props[contracts.QUEUED_PROPERTY].int_value
  summary.labels_to_check = props[contracts.CHECK_LABELS_PROPERTY].int_value


def _model_run(reading: _Reading, out: _Output) -> None:
  summary = reading.summary
  summary.data_quality_dir = artifact_readers.data_quality_dir(out.artifact.uri)
  summary.data_quality = artifact_readers.data_quality_summary(summary.data_quality_dir)


def _transform_graph(reading: _Reading, out: _Output) -> None:
  reading.class_names = artifact_readers.class_names(out.artifact.uri)


# By artifact type name, what an output of that type tells the summary.
_EXTRACTORS: Dict[str, Callable[[_Reading, _Output], None]] = {
    'Examples': _examples,
    'ExampleStatistics': _statistics,
    'ExampleAnomalies': _example_anomalies,
    'Model': _model,
    'ModelBlessing': _blessing,
    'ModelEvaluation': _evaluation,
    'PushedModel': _pushed,
    'InferenceResult': _label_queue,
    'ModelRun': _model_run,
    'TransformGraph': _transform_graph,
}


def summarize(metadata_path: str) -> RunSummary:
  """Summary of the newest pipeline run recorded in the SQLite store."""
  store = metadata.open_store(metadata_path)
  run = metadata.newest_run(store)
  if run is None:
    raise RuntimeError(f'No pipeline run recorded in {metadata_path}')
  summary = RunSummary(run_id=run.name, components=[],
                       started_at=run.create_time_since_epoch / 1000.0)
  reading = _Reading(summary)
  executions = metadata.run_executions(store, run)
  ids = [execution.id for _, execution in executions]
  outputs = metadata.linked_artifacts(store, ids, metadata.OUTPUTS)
  inputs = metadata.linked_artifacts(store, ids, metadata.INPUTS)
  for node, execution in executions:
    summary.components.append(ComponentRun(
        node_id=node, state=metadata.state_name(execution),
        seconds=(execution.last_update_time_since_epoch -
                 execution.create_time_since_epoch) / 1000.0))
    execution_inputs = metadata.by_key(inputs.get(execution.id, []))
    for output in outputs.get(execution.id, []):
      extract = _EXTRACTORS.get(output.type_name)
      if extract:
        extract(reading, _Output(node, output.key, output.artifact, execution_inputs,
                                 execution))
  if summary.blessed is not None and reading.class_names and summary.evaluation_uri:
    summary.evaluation = results.read_evaluation(summary.evaluation_uri, reading.class_names)
  return summary


def edge_exports_line(exports: Dict[str, Any]) -> str:
  """Which TFLite models the version holds, and the quantized ones left out
  with their accuracy loss."""
  models = exports['models']
  left_out = [f'{name} (-{model["drop"] * 100:.2f} points)'
              for name, model in models.items() if not model['published']]
  return ('TFLite for devices: ' +
          ', '.join(name for name, model in models.items() if model['published']) +
          (f'; left out, more than export.max_quantized_drop = '
           f'{exports["max_quantized_drop"]:g} below the SavedModel on the eval split: '
           + ', '.join(left_out) if left_out else ''))


def format_summary(summary: RunSummary) -> str:
  """A short human-readable account of the run."""
  lines = [f'Pipeline run {summary.run_id}']
  for component in summary.components:
    lines.append(f'  {component.node_id:<32} {component.state:<9} '
                 f'{component.seconds:7.1f} s')
  lines.append(f'Quarantined files: {summary.quarantined}' + (
      f' (see {summary.quarantine_report})' if summary.quarantined else ''))
  gate_failed = any(c.node_id == DATA_GATE_NODE and c.state == 'FAILED'
                    for c in summary.components)
  if summary.data_gate_problems or gate_failed:
    lines.append('Data gate FAILED: the data set cannot be used for training' +
                 (':' if summary.data_gate_problems else ' (the problems are in the log).'))
    lines.extend(f'  - {problem}' for problem in summary.data_gate_problems)
  elif summary.data_gate_uri:
    lines.append('Data gate: passed')
  lines.extend(f'  note: {note}' for note in summary.data_gate_notes)
  if summary.anomalies:
    lines.append('Data anomalies found by ExampleValidator:')
    lines.extend(f'  - {anomaly}' for anomaly in summary.anomalies)
  else:
    lines.append('Data anomalies: none')
  evaluation = summary.evaluation
  if evaluation:
    baseline = evaluation.get('baseline_accuracy')
    lines.append(
        f'Eval accuracy: {evaluation["accuracy"]:.4f} on '
        f'{evaluation["example_count"]} images' +
        (f' (baseline {baseline:.4f})' if baseline is not None else
         ' (no baseline yet)'))
  if summary.blessed:
    lines.append(f'Model BLESSED and pushed as version {summary.pushed_version}'
                 f' to {summary.pushed_to}')
    if summary.edge_exports:
      lines.append(edge_exports_line(summary.edge_exports))
  elif summary.blessed is False:
    lines.append('Model NOT blessed: nothing was pushed.')
    lines.extend(f'  - {reason}' for reason in evaluation.get('failures', []))
  else:
    lines.append('The run did not reach the Evaluator.')
  if summary.data_quality:
    lines.append(f'Data quality: {data_quality.describe(summary.data_quality)} '
                 f'({summary.data_quality_dir})')
  if summary.label_queue_uri:
    checks = summary.labels_to_check
    lines.append(f'Label next: {f"{checks} labels to check, then " if checks else ""}'
                 f'{summary.label_queue_size - checks} unlabeled images ranked in '
                 f'{os.path.join(summary.label_queue_uri, contracts.QUEUE_CSV)}'
                 f' (contact sheet: {contracts.CONTACT_SHEET})')
  if summary.report_path:
    lines.append(f'Report: {summary.report_path}')
  return '\n'.join(lines)
