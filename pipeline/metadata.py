"""The ML Metadata store, opened and read in one place.

The run summary, lineage, the benchmarks and the tests read runs, executions
and artifacts through this module, so the store's shape (context type names,
node contexts named '<pipeline>.<node id>', one key step per channel in an
event's path) is known here only.
"""

import dataclasses
import logging
import os
from typing import Dict, Iterable, List, NamedTuple, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

INPUTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
OUTPUTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
# TFX's context types: one context per pipeline run and one per node.
RUN_CONTEXT = 'pipeline_run'
NODE_CONTEXT = 'node'
_STATE_NAMES = {value: name for name, value in metadata_store_pb2.Execution.State.items()}


def open_store(metadata_path: str) -> mlmd.MetadataStore:
  """The SQLite store, read-only (READONLY: a running pipeline may be writing
  to it, and a reader must neither create a missing store nor migrate one)."""
  if not os.path.isfile(metadata_path):
    raise FileNotFoundError(f'No ML Metadata store at {metadata_path}')
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = metadata_path
  connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  quiet = logging.getLogger('absl')   # one INFO line per connection otherwise
  level = quiet.level
  quiet.setLevel(max(level, logging.WARNING))
  try:
    return mlmd.MetadataStore(connection)
  finally:
    quiet.setLevel(level)


def runs(store: mlmd.MetadataStore) -> List[metadata_store_pb2.Context]:
  """Every pipeline run, oldest first."""
  return sorted(store.get_contexts_by_type(RUN_CONTEXT),
                key=lambda context: context.create_time_since_epoch)


def newest_run(store: mlmd.MetadataStore) -> Optional[metadata_store_pb2.Context]:
  found = store.get_contexts_by_type(RUN_CONTEXT)
  return max(found, key=lambda context: context.create_time_since_epoch) if found else None


def context_names(store: mlmd.MetadataStore, execution_id: int) -> Dict[str, str]:
  """The execution's contexts by type (NODE_CONTEXT, RUN_CONTEXT, ...): their names."""
  contexts = store.get_contexts_by_execution(execution_id)
  types = {t.id: t.name for t in store.get_context_types_by_id(
      list({c.type_id for c in contexts}))}
  return {types[c.type_id]: c.name for c in contexts}


def node_id(contexts: Dict[str, str]) -> Optional[str]:
  """The node id, e.g. 'Trainer', of an execution's context_names."""
  name = contexts.get(NODE_CONTEXT)
  return name.split('.', 1)[-1] if name else None


class NodeExecution(NamedTuple):
  """An execution of a run, with the id of the node that ran it."""
  node: str
  execution: metadata_store_pb2.Execution


def state_name(execution: metadata_store_pb2.Execution) -> str:
  """COMPLETE, CACHED, RUNNING, FAILED, ..."""
  return _STATE_NAMES.get(execution.last_known_state, 'UNKNOWN')


def run_executions(store: mlmd.MetadataStore,
                   run: metadata_store_pb2.Context) -> List[NodeExecution]:
  """The run's executions in the order they started, each with its node id."""
  executions = sorted(store.get_executions_by_context(run.id),
                      key=lambda e: e.create_time_since_epoch)
  return [NodeExecution(node_id(context_names(store, e.id)), e) for e in executions]


def event_keys(event: metadata_store_pb2.Event) -> List[str]:
  """The channel keys of an event: TFX adds a (key, index) pair of path steps
  per key when one artifact fills several (an Evaluator whose baseline is the
  model itself)."""
  return [step.key for step in event.path.steps if step.HasField('key')]


@dataclasses.dataclass(frozen=True)
class Linked:
  """An artifact an execution read or wrote, under one of its channel keys
  ('examples', 'model', 'baseline_model', ...)."""
  key: str
  artifact: metadata_store_pb2.Artifact
  type_name: str     # 'Examples', 'Model', ...


def linked_artifacts(store: mlmd.MetadataStore, execution_ids: Iterable[int],
                     event_types) -> Dict[int, List[Linked]]:
  """Per execution, the artifacts of its events of `event_types` (INPUTS,
  OUTPUTS, ...) in artifact id order, once per key they fill."""
  events = [e for e in store.get_events_by_execution_ids(list(execution_ids))
            if e.type in event_types]
  artifacts = {a.id: a for a in store.get_artifacts_by_id(
      list({e.artifact_id for e in events}))}
  type_names = {t.id: t.name for t in store.get_artifact_types_by_id(
      list({a.type_id for a in artifacts.values()}))}
  found: Dict[int, List[Linked]] = {}
  for event in sorted(events, key=lambda e: e.artifact_id):
    artifact = artifacts.get(event.artifact_id)
    for key in event_keys(event) if artifact is not None else []:
      found.setdefault(event.execution_id, []).append(
          Linked(key, artifact, type_names[artifact.type_id]))
  return found


def by_key(linked: List[Linked]) -> Dict[str, metadata_store_pb2.Artifact]:
  """The artifact of each key (the first, for a key with several)."""
  found: Dict[str, metadata_store_pb2.Artifact] = {}
  for item in linked:
    found.setdefault(item.key, item.artifact)
  return found
