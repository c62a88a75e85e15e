"""The schema a run imports: derived from the class folders when none is
named, and always imported from a content-addressed copy, so that an edited
schema is never served stale from TFX's cache."""

import os

import pytest
from tfx import v1 as tfx

from pipeline import config as config_lib
from pipeline import dag, metadata, schema


def _write_schema(path, classes):
  path.write_text(schema.derive(config_lib.DataConfig.schema_file, classes))


def _import_schema(config):
  """Runs an ImportSchemaGen with the `schema_file` that `create_local_pipeline`
  gives the DAG's, alone through LocalDagRunner, cache on; returns its
  execution's state and the classes of the schema artifact it output."""
  [schema_file] = [component.exec_properties['schema_file']
                   for component in dag.create_local_pipeline(config).components
                   if component.id == 'ImportSchemaGen']
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='schema-cache-test', pipeline_root=config.pipeline.pipeline_root,
      components=[tfx.components.ImportSchemaGen(schema_file=schema_file)],
      enable_cache=True, metadata_connection_config=dag.local_metadata(config)))
  store = metadata.open_store(config.pipeline.metadata_path)
  execution = max(store.get_executions(), key=lambda e: e.id)
  [output] = metadata.linked_artifacts(store, [execution.id], metadata.OUTPUTS)[execution.id]
  return (metadata.state_name(execution),
          schema.class_names(os.path.join(output.artifact.uri, 'schema.pbtxt')))


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


def test_a_derived_schema_lists_the_classes_in_id_order(tmp_path):
  derived = tmp_path / 'schema.pbtxt'
  _write_schema(derived, ['cat', 'dog'])
  assert schema.class_names(str(derived)) == ['cat', 'dog']
  with pytest.raises(ValueError, match='at least two classes'):
    schema.derive(config_lib.DataConfig.schema_file, ['cat'])


def test_the_pinned_path_follows_the_content(tmp_path):
  text = schema.derive(config_lib.DataConfig.schema_file, ['cat', 'dog'])
  path = schema.pin(text, str(tmp_path))
  assert path == schema.pin(text, str(tmp_path))
  assert path.startswith(str(tmp_path / schema.PINNED_DIR))
  assert open(path, encoding='utf-8').read() == text
  assert schema.pin(text + '\n', str(tmp_path)) != path


def test_class_folders_leave_out_empty_ones(tmp_path):
  for name in ('dog', 'cat', 'eel/deep/deeper', 'fox/.hidden_only', '.git'):
    (tmp_path / name).mkdir(parents=True)
  (tmp_path / 'cat' / 'a.png').write_bytes(b'')         # a file, even an unusable one
  (tmp_path / 'eel' / 'deep' / 'deeper' / 'b.png').write_bytes(b'')
  (tmp_path / 'fox' / '.hidden_only' / 'c.png').write_bytes(b'')
  (tmp_path / 'fox' / '.DS_Store').write_bytes(b'')
  os.symlink('.', tmp_path / 'dog' / 'loop')             # a folder link loop ends
  assert schema.class_folders(str(tmp_path)) == (['cat', 'eel'], ['dog', 'fox'])


def test_a_fixed_split_class_needs_a_file_in_train_or_eval(tmp_path):
  for folder in ('train/cat', 'train/dog', 'train/eel', 'eval/dog', 'eval/cat'):
    (tmp_path / folder).mkdir(parents=True)
  (tmp_path / 'train' / 'cat' / 'a.png').write_bytes(b'')
  (tmp_path / 'eval' / 'dog' / 'b.png').write_bytes(b'')
  assert schema.class_folders(str(tmp_path)) == (['cat', 'dog'], ['eel'])
