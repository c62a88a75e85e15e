"""Where a registry version came from, read from the ML Metadata store.

A version's record names the Trainer output it was copied from
(`model_artifact_uri`) and the pipeline run that published it. From the Model
artifact with that URI the store's events lead to everything upstream and to
the evaluation downstream:

    Model <- Trainer <- examples (ExampleGen), transform graph, schema
                        transform graph <- Transform <- examples, schema
                        examples -> StatisticsGen -> statistics
    Model -> Evaluator -> evaluation, blessing (and the baseline it was compared to)

Cached reruns add executions (state CACHED) that list the same artifacts as
outputs; the producer reported is the execution that really made the artifact.
"""

import datetime
from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from pipeline import metadata

_COMPLETE = metadata_store_pb2.Execution.COMPLETE
_CACHED = metadata_store_pb2.Execution.CACHED
# Bookkeeping properties TFX puts on every artifact; not lineage.
_HIDDEN_PROPERTIES = {'tfx_version', 'state', 'is_external', 'producer_component'}


def _time(milliseconds: int) -> str:
  return datetime.datetime.fromtimestamp(
      milliseconds / 1000, datetime.timezone.utc).isoformat(timespec='seconds')


def _value(value: metadata_store_pb2.Value) -> Any:
  kind = value.WhichOneof('value')
  return getattr(value, kind) if kind in ('int_value', 'double_value', 'string_value') else None


class _Graph:
  """Events and contexts of a store, looked up lazily and cached."""

  def __init__(self, metadata_path: str):
    self.store = metadata.open_store(metadata_path)
    self._artifact_types = {t.id: t.name for t in self.store.get_artifact_types()}
    self._contexts: Dict[int, Dict[str, str]] = {}

  def contexts(self, execution_id: int) -> Dict[str, str]:
    if execution_id not in self._contexts:
      self._contexts[execution_id] = metadata.context_names(self.store, execution_id)
    return self._contexts[execution_id]

  def component(self, execution_id: int) -> Optional[str]:
    """The node id, e.g. 'Trainer'."""
    return metadata.node_id(self.contexts(execution_id))

  def run(self, execution_id: int) -> Optional[str]:
    return self.contexts(execution_id).get(metadata.RUN_CONTEXT)

  def type_name(self, artifact: metadata_store_pb2.Artifact) -> str:
    return self._artifact_types.get(artifact.type_id, '')

  def _executions(self, artifact_id: int, event_types, key: Optional[str]):
    events = [e for e in self.store.get_events_by_artifact_ids([artifact_id])
              if e.type in event_types and (key is None or key in metadata.event_keys(e))]
    executions = self.store.get_executions_by_id(list({e.execution_id for e in events}))
    return sorted(executions, key=lambda e: (e.create_time_since_epoch, e.id))

  def producer(self, artifact_id: int) -> Optional[metadata_store_pb2.Execution]:
    """The execution that made the artifact, not a cached rerun that reused it."""
    executions = self._executions(artifact_id, metadata.OUTPUTS, None)
    made = [e for e in executions if e.last_known_state != _CACHED]
    return (made or executions or [None])[0]

  def consumers(self, artifact_id: int, key: str) -> List[metadata_store_pb2.Execution]:
    return self._executions(artifact_id, metadata.INPUTS, key)

  def artifacts(self, execution_id: int, event_types) -> Dict[str, metadata_store_pb2.Artifact]:
    """The execution's input or output artifacts by channel key (first of each)."""
    return metadata.by_key(metadata.linked_artifacts(
        self.store, [execution_id], event_types).get(execution_id, []))

  def describe(self, artifact: Optional[metadata_store_pb2.Artifact]) -> Optional[Dict[str, Any]]:
    """uri, artifact id, type and the component and run that produced it."""
    if artifact is None:
      return None
    producer = self.producer(artifact.id)
    properties = {}
    for source in (artifact.properties, artifact.custom_properties):
      for name, value in sorted(source.items()):
        if name not in _HIDDEN_PROPERTIES and _value(value) is not None:
          properties[name] = _value(value)
    return {
        'uri': artifact.uri,
        'artifact_id': artifact.id,
        'type': self.type_name(artifact),
        'component': self.component(producer.id) if producer else None,
        'execution_id': producer.id if producer else None,
        'pipeline_run': self.run(producer.id) if producer else None,
        'created_at': _time(artifact.create_time_since_epoch),
        'properties': properties,
    }


def _find_model(graph: _Graph, model_uri: str) -> Optional[metadata_store_pb2.Artifact]:
  models = [a for a in graph.store.get_artifacts_by_uri(model_uri)
            if graph.type_name(a) == 'Model']
  return min(models, key=lambda a: a.id) if models else None


def _evaluator(graph: _Graph, model_id: int,
               run_id: Optional[str]) -> Optional[metadata_store_pb2.Execution]:
  """The Evaluator execution that judged the model (not one that used it as a
  baseline): the one in the publishing run, else the newest complete one."""
  judged = [e for e in graph.consumers(model_id, 'model')
            if e.last_known_state in (_COMPLETE, _CACHED) and
            any(graph.type_name(a) == 'ModelBlessing'
                for a in graph.artifacts(e.id, metadata.OUTPUTS).values())]
  in_run = [e for e in judged if run_id and graph.run(e.id) == run_id]
  return (in_run or judged[::-1] or [None])[0]


def model_lineage(metadata_path: str, record: Dict[str, Any]) -> Dict[str, Any]:
  """Everything that produced a registry version, from its record and the store.

  Returns a plain dict: pipeline_run, model, transform_graph, schema, examples, statistics, evaluation, blessing and
  baseline_model; each artifact with uri, artifact_id, type, the component and
  pipeline run that produced it, and its properties. Entries the store does
  not hold are None.
  """
  from registry import layout  # pylint: disable=g-import-not-at-top
  model_uri = record.get(layout.MODEL_URI_KEY)
  if not model_uri:
    raise ValueError(f'The record of version {record.get("version")} names no '
                     f'{layout.MODEL_URI_KEY}')
  graph = _Graph(metadata_path)
  model = _find_model(graph, model_uri)
  if model is None:
    raise LookupError(f'No Model artifact with URI {model_uri} in {metadata_path} '
                      '(was this version published from another metadata store?)')
  run_id = record.get('pipeline_run_id')

  trainer = graph.producer(model.id)
  trainer_inputs = graph.artifacts(trainer.id, metadata.INPUTS) if trainer else {}
  transform_graph = trainer_inputs.get('transform_graph')
  transform = graph.producer(transform_graph.id) if transform_graph else None
  transform_inputs = graph.artifacts(transform.id, metadata.INPUTS) if transform else {}
  examples = trainer_inputs.get('examples')
  statistics = None   # StatisticsGen's output
  for execution in graph.consumers(examples.id, 'examples') if examples else []:
    statistics = graph.artifacts(execution.id, metadata.OUTPUTS).get('statistics', statistics)

  evaluator = _evaluator(graph, model.id, run_id)
  evaluator_outputs = graph.artifacts(evaluator.id, metadata.OUTPUTS) if evaluator else {}
  evaluator_inputs = graph.artifacts(evaluator.id, metadata.INPUTS) if evaluator else {}

  run = None
  if run_id:
    context = graph.store.get_context_by_type_and_name(metadata.RUN_CONTEXT, run_id)
    run = {'id': run_id, 'found': context is not None}
    if context is not None:
      pipelines = graph.store.get_parent_contexts_by_context(context.id)
      run.update(context_id=context.id, created_at=_time(context.create_time_since_epoch),
                 pipeline=pipelines[0].name if pipelines else None)

  return {
      'metadata_path': metadata_path,
      'pipeline_run': run,
      'model': graph.describe(model),
      'transform_graph': graph.describe(transform_graph),
      'schema': graph.describe(trainer_inputs.get('schema') or
                               transform_inputs.get('schema')),
      'examples': graph.describe(examples),
      'statistics': graph.describe(statistics),
      'evaluation': graph.describe(evaluator_outputs.get('evaluation')),
      'blessing': graph.describe(evaluator_outputs.get('blessing')),
      'baseline_model': graph.describe(evaluator_inputs.get('baseline_model')),
  }


def baseline_model_uris(metadata_path: str,
                        records: List[Dict[str, Any]]) -> Dict[str, str]:
  """For each version record, by model URI: the URI of the blessed baseline the
  publishing run's Evaluator compared the model to (absent: no baseline, as on
  a first run, or a model this store does not know)."""
  from registry import layout  # pylint: disable=g-import-not-at-top
  graph = _Graph(metadata_path)
  found = {}
  for record in records:
    uri = record.get(layout.MODEL_URI_KEY)
    model = _find_model(graph, uri) if uri else None
    evaluator = _evaluator(graph, model.id, record.get('pipeline_run_id')) if model else None
    baseline = graph.artifacts(evaluator.id, metadata.INPUTS).get(
        'baseline_model') if evaluator else None
    if baseline is not None:
      found[uri] = baseline.uri
  return found
