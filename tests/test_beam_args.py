"""Beam argument sets, checked by construction: Beam's own option parser must
read every flag (none unknown) and land it on the option the runner uses."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from tfx.utils import dependency_utils

from pipeline import config as config_lib
from pipeline.beam_args import beam_pipeline_args

IMAGE = 'europe-docker.pkg.dev/acme/ml/image-classifier:1.4.0'


def _parsed(*overrides):
  """(args, Beam's parsed options) for a config with these overrides."""
  args = beam_pipeline_args(config_lib.load_config(
      None, [f'deploy.image={IMAGE}', *overrides]))
  options = PipelineOptions(args)
  unknown = (set(options.get_all_options(retain_unknown_options=True))
             - set(options.get_all_options()))
  assert not unknown, f'flags Beam does not know: {unknown}'
  return args, options.get_all_options()


def test_default_runs_in_process():
  _, options = _parsed()
  assert options['runner'] is None                       # DirectRunner
  assert options['direct_running_mode'] == 'in_memory'
  assert options['direct_num_workers'] == 1


@pytest.mark.parametrize('workers', [2, 0])
def test_more_direct_workers_run_as_processes(workers):
  _, options = _parsed(f'beam.workers={workers}')
  assert options['direct_running_mode'] == 'multi_processing'
  assert options['direct_num_workers'] == workers


@pytest.mark.parametrize('workers', [1, 2])
def test_direct_runs_spare_tfx_packaging_itself_for_workers(workers):
  """TFX builds an sdist of its own installation for remote Beam workers
  before every Beam component unless a dependency flag is set; DirectRunner's
  workers run from this environment."""
  args, _ = _parsed(f'beam.workers={workers}')
  assert dependency_utils.make_beam_dependency_flags(args) == args


def test_dataflow_runs_the_pipeline_image_on_runner_v2():
  _, options = _parsed('beam.runner=dataflow', 'beam.workers=20',
                       'gcp.project=acme-ml', 'gcp.region=europe-west4',
                       'gcp.service_account=runner@acme-ml.iam.gserviceaccount.com',
                       'beam.temp_location=gs://acme-ml/tmp')
  assert options['runner'] == 'DataflowRunner'
  assert (options['project'], options['region']) == ('acme-ml', 'europe-west4')
  assert options['temp_location'] == 'gs://acme-ml/tmp'
  assert options['sdk_container_image'] == IMAGE
  assert 'use_runner_v2' in options['experiments']
  assert options['max_num_workers'] == 20
  assert options['service_account_email'] == 'runner@acme-ml.iam.gserviceaccount.com'


def test_flink_and_spark_start_the_pipeline_image_as_sdk_worker():
  _, flink = _parsed('beam.runner=flink', 'beam.flink_master=flink-jm:8081',
                     'beam.workers=8')
  assert (flink['runner'], flink['flink_master'], flink['parallelism']) == (
      'FlinkRunner', 'flink-jm:8081', 8)
  _, spark = _parsed('beam.runner=spark', 'beam.spark_master_url=spark://spark:7077')
  assert (spark['runner'], spark['spark_master_url']) == (
      'SparkRunner', 'spark://spark:7077')
  for options in (flink, spark):
    assert options['environment_type'] == 'DOCKER'
    assert options['environment_config'] == IMAGE


def test_extra_args_come_last_and_win():
  args, options = _parsed('beam.workers=2',
                          'beam.extra_args=[--direct_num_workers=3]')
  assert args[-1] == '--direct_num_workers=3'
  assert options['direct_num_workers'] == 3


@pytest.mark.parametrize('overrides, message', [
    (['beam.runner=dataflow'], 'needs gcp.project, beam.temp_location'),
    (['beam.runner=dataflow', 'gcp.project=p', 'beam.temp_location=/tmp'],
     'gs:// folder'),
    (['beam.runner=flink'], 'needs beam.flink_master'),
    (['beam.runner=spark'], 'needs beam.spark_master_url'),
])
def test_missing_cluster_settings_fail_with_the_key_name(overrides, message):
  with pytest.raises(ValueError, match=message):
    beam_pipeline_args(config_lib.load_config(None, overrides))
