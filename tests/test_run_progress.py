"""`pipeline run`'s progress lines: one as each component starts, one as it
ends, from both local orchestrators (runner.component_progress)."""

import logging
import re

import pytest
from tfx import v1 as tfx
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipeline import config as config_lib
from pipeline import runner


def _run(tmp_path, dag_runner, schema_file):
  """ImportSchemaGen alone, through `dag_runner`, under component_progress."""
  metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      str(tmp_path / 'metadata.sqlite'))
  with runner.component_progress(1):
    dag_runner.run(tfx.dsl.Pipeline(
        pipeline_name='progress-test', pipeline_root=str(tmp_path / 'root'),
        components=[tfx.components.ImportSchemaGen(schema_file=schema_file)],
        metadata_connection_config=metadata, enable_cache=False))


def _progress(caplog):
  return [re.sub(r'\d+\.\d s', 'T s', record.getMessage()) for record in caplog.records
          if record.name == 'root' and record.getMessage().startswith('[')]


@pytest.mark.parametrize('dag_runner', [tfx.orchestration.LocalDagRunner, BeamDagRunner])
def test_each_component_says_when_it_runs_and_how_long_it_took(
    dag_runner, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  _run(tmp_path, dag_runner(), config_lib.DataConfig.schema_file)
  assert _progress(caplog) == ['[1/1] ImportSchemaGen running',
                               '[1/1] ImportSchemaGen done in T s']


def test_a_failing_component_says_so_and_the_hook_is_removed(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  launch = runner.launcher.Launcher.launch
  with pytest.raises(Exception, match="missing.pbtxt"):
    _run(tmp_path, tfx.orchestration.LocalDagRunner(), str(tmp_path / 'missing.pbtxt'))
  assert _progress(caplog) == ['[1/1] ImportSchemaGen running',
                               '[1/1] ImportSchemaGen failed after T s']
  assert runner.launcher.Launcher.launch is launch and not hasattr(launch, "__wrapped__")
