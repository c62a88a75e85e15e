"""Kubeflow Pipelines v2 / Vertex AI Pipelines: compile the spec, run or schedule it.

  compile_spec(config, 'spec.json')           TFX's KubeflowV2DagRunner writes the
                                              PipelineJob spec (JSON, or YAML)
  send(build_vertex_request(config, spec))    one Vertex AI run, or a schedule

Building a request needs no network (credentials can be passed in), so what
would be sent can be checked offline; `send` is the only call that talks to
Vertex AI. Open-source KFP 2 cannot run this spec: its backend rejects the
resolver tasks TFX compiles the latest-blessed-model Resolver into (see
docs/orchestrators.md).
"""

import contextlib
import dataclasses
import json
import os
import zoneinfo
from typing import Any, Dict, Iterator, Optional

from google.cloud import aiplatform
from google.cloud.aiplatform.compat.types import schedule as gca_schedule
from tfx import v1 as tfx

from components.contracts import is_remote
from pipeline import dag
from pipeline.config import REPO_ROOT, Config

# TFX packages a module file into a wheel under the pipeline root at compile
# time; the image already holds the code at deploy.code_root, so it must not.
_NO_MODULE_WHEELS = 'UNSUPPORTED_DO_NOT_PACKAGE_USER_MODULES'


def check_paths(config: Config) -> None:
  """Every path a step opens must exist for a container on another machine:
  written ones remote, read ones remote or inside the repository (the image
  holds it at deploy.code_root)."""
  if not is_remote(config.pipeline.output_dir):
    raise ValueError(
        f'pipeline.output_dir={config.pipeline.output_dir} is local; Kubeflow / '
        'Vertex AI Pipelines need a remote pipeline root: set pipeline.output_dir '
        'to e.g. gs://<bucket>/image-classifier')
  if not is_remote(config.pipeline.registry):
    raise ValueError(f'pipeline.registry_dir={config.pipeline.registry} is local: '
                     'a step container would publish into its own disk; leave it '
                     'empty (<output_dir>/registry) or set a gs:// folder')
  if is_remote(config.data.path) and config.data.split == 'auto':
    raise ValueError(f'data.path={config.data.path} is remote: set data.split to '
                     "'folders' (train/ + eval/) or 'stratified'; it cannot be "
                     'looked at while compiling')
  for key, path in (('data.path', config.data.path),
                    ('data.schema_file', config.data.schema_file),
                    ('data.unlabeled_path', config.data.unlabeled_path)):
    if path and not is_remote(path) and dag.path_in_repo(path) is None:
      raise ValueError(f'{key}={path} is neither remote (gs://...) nor inside '
                       f'{REPO_ROOT}, so the image does not hold it')


@contextlib.contextmanager
def _module_files_from_image() -> Iterator[None]:
  """Keeps Transform's and the Trainer's module_file a path in the image.

  Without this, the compiler opens the module files at their in-image path
  (absent here) and uploads them as wheels to the pipeline root.
  """
  previous = os.environ.get(_NO_MODULE_WHEELS)
  os.environ[_NO_MODULE_WHEELS] = '1'
  try:
    yield
  finally:
    if previous is None:
      del os.environ[_NO_MODULE_WHEELS]
    else:
      os.environ[_NO_MODULE_WHEELS] = previous


def compile_spec(config: Config, output_file: str) -> str:
  """Writes the pipeline spec; YAML (the PipelineSpec alone, without the
  pipeline root) when `output_file` ends in .yaml/.yml, else the JSON PipelineJob."""
  check_paths(config)
  with _module_files_from_image():
    tfx_pipeline = dag.create_pipeline(config, code_root=config.deploy.code_root)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=config.deploy.image),
      output_dir=os.path.dirname(output_file) or os.curdir,
      output_filename=os.path.basename(output_file))
  runner.run(tfx_pipeline)
  return output_file


def vertex_cron(config: Config) -> str:
  """Vertex AI's cron: the 5-field schedule prefixed with its IANA time zone."""
  try:
    zoneinfo.ZoneInfo(config.deploy.timezone)
  except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
    raise ValueError(f'deploy.timezone={config.deploy.timezone!r} is not an IANA '
                     'time zone (e.g. UTC, Europe/Berlin)') from error
  return f'TZ={config.deploy.timezone} {config.deploy.schedule}'


@dataclasses.dataclass(frozen=True)
class VertexRequest:
  """What `send` submits: one run of `job`, or, when `schedule` holds
  `PipelineJob.create_schedule` arguments, a schedule of it."""
  job: aiplatform.PipelineJob
  service_account: Optional[str]
  schedule: Optional[Dict[str, Any]]


def build_vertex_request(config: Config, spec_file: str, once: bool = False,
                         credentials=None) -> VertexRequest:
  """Builds, without calling Vertex AI, a run (`once`) or a schedule of the
  compiled spec. `credentials` None means Application Default Credentials."""
  if not config.gcp.project:
    raise ValueError('gcp.project must be set to submit to Vertex AI Pipelines')
  check_paths(config)
  _check_spec(spec_file, config.pipeline.pipeline_root)
  job = aiplatform.PipelineJob(
      display_name=config.pipeline.name,
      template_path=spec_file,
      pipeline_root=config.pipeline.pipeline_root,
      enable_caching=config.pipeline.enable_cache,
      project=config.gcp.project,
      location=config.gcp.region,
      credentials=credentials)
  service_account = config.gcp.service_account or None
  schedule = None if once else {
      'cron': vertex_cron(config),
      'display_name': schedule_name(config),
      # A run still going when the next one is due makes the next one skip:
      # two runs would race on the registry and the baseline.
      'max_concurrent_run_count': 1,
      'allow_queueing': False,
      'service_account': service_account,
  }
  return VertexRequest(job, service_account, schedule)


def schedule_name(config: Config) -> str:
  return f'{config.pipeline.name}-schedule'


def _check_spec(spec_file: str, pipeline_root: str) -> None:
  """The spec must exist; a JSON spec also records the root it was compiled
  for, and a different one means another config (other registry, data, image)."""
  if not is_remote(spec_file) and not os.path.isfile(spec_file):
    raise FileNotFoundError(f'Pipeline spec {spec_file} does not exist')
  if is_remote(spec_file) or spec_file.endswith(('.yaml', '.yml')):
    return
  with open(spec_file, encoding='utf-8') as f:
    compiled_root = json.load(f).get('runtimeConfig', {}).get('gcsOutputDirectory')
  if compiled_root and compiled_root != pipeline_root:
    raise ValueError(f'{spec_file} was compiled for pipeline root {compiled_root}, '
                     f'the config gives {pipeline_root}: compile and schedule '
                     'with the same config')


def send(request: VertexRequest) -> str:
  """Submits the run or creates the schedule; returns its resource name."""
  if request.schedule is None:
    request.job.submit(service_account=request.service_account)
    return request.job.resource_name
  _refuse_second_schedule(request)
  return request.job.create_schedule(**request.schedule).resource_name


def _refuse_second_schedule(request: VertexRequest) -> None:
  """A second live schedule of the same pipeline would double every run."""
  name = request.schedule['display_name']
  live = (gca_schedule.Schedule.State.ACTIVE, gca_schedule.Schedule.State.PAUSED)
  for existing in aiplatform.PipelineJobSchedule.list(
      filter=f'display_name="{name}"', project=request.job.project,
      location=request.job.location, credentials=request.job.credentials):
    if existing.state in live:
      raise ValueError(
          f'Schedule {name!r} already exists ({existing.resource_name}); delete '
          'it first (it keeps its own copy of the spec), then schedule again')
