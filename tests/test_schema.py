"""The schema a run imports: a content-addressed copy, so that an edited
schema is never served stale from TFX's cache."""

import os

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import config as config_lib
from pipeline import dag, schema


def _write_schema(path, classes):
  path.write_text(schema.derive(config_lib.DataConfig.schema_file, classes))


def _import_schema(config):
  """Runs an ImportSchemaGen with the `schema_file` that `create_local_pipeline`
  gives the DAG's, alone through LocalDagRunner, cache on; returns its
  execution's state and the classes of the schema artifact it output."""
  connection = dag.local_metadata(config)
  [schema_file] = [component.exec_properties['schema_file']
                   for component in dag.create_local_pipeline(config).components
                   if component.id == 'ImportSchemaGen']
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='schema-cache-test', pipeline_root=config.pipeline.pipeline_root,
      components=[tfx.components.ImportSchemaGen(schema_file=schema_file)],
      enable_cache=True, metadata_connection_config=connection))
  store = mlmd.MetadataStore(connection)
  execution = max(store.get_executions(), key=lambda e: e.id)
  [output] = [event.artifact_id for event in store.get_events_by_execution_ids([execution.id])
              if event.type == metadata_store_pb2.Event.OUTPUT]
  [artifact] = store.get_artifacts_by_id([output])
  state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
  return state, schema.class_names(os.path.join(artifact.uri, 'schema.pbtxt'))


def test_a_schema_edited_in_place_is_imported_again(tmp_path):
  named = tmp_path / 'mine.pbtxt'
  config = config_lib.load_config(None, [f'data.schema_file={named}',
                                         f'pipeline.output_dir={tmp_path / "out"}'])
  _write_schema(named, ['cat', 'dog'])
  assert _import_schema(config) == ('COMPLETE', ['cat', 'dog'])
  _write_schema(named, ['cat', 'dog', 'fox'])       # same path, new content
  assert _import_schema(config) == ('COMPLETE', ['cat', 'dog', 'fox'])
  # Unchanged content: the cache is used, and serves the schema now in the file.
  assert _import_schema(config) == ('CACHED', ['cat', 'dog', 'fox'])
  pinned = os.listdir(tmp_path / 'out' / schema.PINNED_DIR)
  assert len(pinned) == 2 and all(len(name) == 16 for name in pinned)


def test_the_pinned_path_follows_the_content(tmp_path):
  text = schema.derive(config_lib.DataConfig.schema_file, ['cat', 'dog'])
  path = schema.pin(text, str(tmp_path))
  assert path == schema.pin(text, str(tmp_path))
  assert path.startswith(str(tmp_path / schema.PINNED_DIR))
  assert open(path, encoding='utf-8').read() == text
  assert schema.pin(text + '\n', str(tmp_path)) != path
