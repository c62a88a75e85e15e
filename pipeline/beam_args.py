"""Beam pipeline arguments for each place the data-parallel steps can run.

ExampleGen, StatisticsGen, Transform and the Evaluator are Beam jobs; TFX
hands them `beam_pipeline_args`, so moving them to a cluster is a change of
arguments, not of code. Every remote set runs the pipeline's own container
image (the Dockerfile adds Beam's SDK harness to it), so workers import the
same code and weights as the orchestrator's steps.
"""

from typing import List

from pipeline.config import Config


def beam_pipeline_args(config: Config) -> List[str]:
  """The arguments for `config.beam.runner`, then `beam.extra_args`."""
  build = {
      'direct': _direct,
      'dataflow': _dataflow,
      'flink': _flink,
      'spark': _spark,
  }[config.beam.runner]
  return build(config) + list(config.beam.extra_args)


def _direct(config: Config) -> List[str]:
  # One worker runs in this process; more (or 0: one per CPU) run as
  # separate processes, which is what sidesteps the GIL for image decoding.
  # Both run from this environment, and DirectRunner ignores the container
  # image; naming it tells TFX the workers already have TFX, which it would
  # otherwise package as an sdist for them before every Beam component (a
  # setuptools build each time).
  image = f'--sdk_container_image={config.deploy.image}'
  if config.beam.workers == 1:
    return ['--direct_running_mode=in_memory', '--direct_num_workers=1', image]
  return ['--direct_running_mode=multi_processing',
          f'--direct_num_workers={config.beam.workers}', image]


def _dataflow(config: Config) -> List[str]:
  _require('dataflow', gcp_project=config.gcp.project,
           beam_temp_location=config.beam.temp_location)
  if not config.beam.temp_location.startswith('gs://'):
    raise ValueError('beam.temp_location must be a gs:// folder for Dataflow')
  args = [
      '--runner=DataflowRunner',
      f'--project={config.gcp.project}',
      f'--region={config.gcp.region}',
      f'--temp_location={config.beam.temp_location}',
      # Custom containers need Runner v2.
      '--experiments=use_runner_v2',
      f'--sdk_container_image={config.deploy.image}',
  ]
  if config.beam.workers > 1:
    args.append(f'--max_num_workers={config.beam.workers}')
  if config.gcp.service_account:
    args.append(f'--service_account_email={config.gcp.service_account}')
  return args


def _flink(config: Config) -> List[str]:
  _require('flink', beam_flink_master=config.beam.flink_master)
  args = ['--runner=FlinkRunner', f'--flink_master={config.beam.flink_master}',
          *_docker_worker_args(config)]
  if config.beam.workers > 1:
    args.append(f'--parallelism={config.beam.workers}')
  return args


def _spark(config: Config) -> List[str]:
  # Spark's parallelism comes from the cluster's executors, not a flag.
  _require('spark', beam_spark_master_url=config.beam.spark_master_url)
  return ['--runner=SparkRunner',
          f'--spark_master_url={config.beam.spark_master_url}',
          *_docker_worker_args(config)]


def _docker_worker_args(config: Config) -> List[str]:
  """Flink and Spark start the pipeline's image as the Python SDK worker."""
  return ['--environment_type=DOCKER',
          f'--environment_config={config.deploy.image}']


def _require(runner: str, **values: str) -> None:
  missing = [key.replace('_', '.', 1) for key, value in values.items() if not value]
  if missing:
    raise ValueError(f'beam.runner={runner} needs {", ".join(missing)} to be set')
