"""Data that does not fit the curated schema is reported before training."""

import numpy as np
import pytest
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from components.trainer import task
from pipeline import config as config_lib
from pipeline import dag, run_summary, schema

from conftest import copy_sample


def test_unknown_label_is_reported_as_an_anomaly(tmp_path):
  data_dir = copy_sample(str(tmp_path / 'images'), ['bag', 'trouser', 'coat'], 4)
  schema_file = tmp_path / 'schema.pbtxt'
  schema_file.write_text(schema.derive(config_lib.DataConfig.schema_file,
                                       ['bag', 'trouser']))
  config = config_lib.load_config(None, [
      f'data.path={data_dir}', f'data.schema_file={schema_file}',
      f'pipeline.output_dir={tmp_path / "out"}'])
  tfx.orchestration.LocalDagRunner().run(
      dag.create_pipeline(config, metadata_connection_config=dag.local_metadata(config)),
      run_options=RunOptions(to_nodes=['ExampleValidator']))

  summary = run_summary.summarize(config.pipeline.metadata_path)
  assert summary.anomalies
  assert any("'label'" in anomaly and 'coat' in anomaly
             for anomaly in summary.anomalies), summary.anomalies
  assert 'Data anomalies found by ExampleValidator' in run_summary.format_summary(summary)


def test_trainer_refuses_labels_outside_the_schema():
  with pytest.raises(ValueError, match=r"label\(s\) \['coat'\].*not in the schema"):
    task._check_classes(['bag', 'trouser', 'coat'], ['bag', 'trouser'],  # pylint: disable=protected-access
                        np.array([3, 3, 3]))


def test_trainer_refuses_a_single_class():
  with pytest.raises(ValueError, match='at least two classes'):
    task._check_classes(['bag', 'trouser'], ['bag', 'trouser'],  # pylint: disable=protected-access
                        np.array([5, 0]))
