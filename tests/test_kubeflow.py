"""The Kubeflow Pipelines v2 / Vertex AI Pipelines target: the spec TFX's
KubeflowV2DagRunner compiles through `python -m pipeline compile`, read back
as JSON, and the Vertex AI run / schedule built from it (offline)."""

import inspect
import json
import os
import re

from google.auth.credentials import AnonymousCredentials
import pytest
import yaml

from pipeline import __main__ as cli
from pipeline import beam_args
from pipeline import config as config_lib
from pipeline import dag
from pipeline import kubeflow

from helpers import REPO_ROOT

IMAGE = 'gcr.io/p/image-classifier:v1'
OUTPUT_DIR = 'gs://bucket/image-classifier'
OVERRIDES = [
    f'pipeline.output_dir={OUTPUT_DIR}',
    f'deploy.image={IMAGE}',
    'beam.runner=dataflow',
    'beam.temp_location=gs://bucket/tmp',
    'gcp.project=p',
]
BEAM_COMPONENTS = ('ImageExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')
# The Resolver becomes two Vertex resolver tasks: the latest blessing, then its model.
RESOLVER_TASKS = ('latest_blessed_model_resolver-model-blessing-resolver',
                  'latest_blessed_model_resolver-model-resolver')
# What the KFP backend fills in at run time: the executor's whole input, and
# the model id the resolved blessing names.
KFP_RUNTIME_PLACEHOLDERS = {
    '{{$}}', "{{$.inputs.artifacts['input'].metadata['current_model_id']}}"}


def _config(*extra):
  return config_lib.load_config(None, OVERRIDES + list(extra))


def _set_args(overrides):
  return [arg for override in overrides for arg in ('--set', override)]


@pytest.fixture(scope='module')
def spec_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('kubeflow') / 'spec.json')
  assert cli.main(['compile', '--target', 'kubeflow', '--output', path,
                   *_set_args(OVERRIDES)]) == 0
  return path


@pytest.fixture(scope='module')
def spec(spec_file):
  with open(spec_file, encoding='utf-8') as f:
    return json.load(f)


def _tasks(spec):
  return spec['pipelineSpec']['root']['dag']['tasks']


def _parameters(spec, task):
  return {name: value['runtimeValue']['constantValue']
          for name, value in _tasks(spec)[task]['inputs']['parameters'].items()}


def _container(spec, task):
  executors = spec['pipelineSpec']['deploymentSpec']['executors']
  return executors[f'{task}_executor']['container']


def _strings(value):
  """Every string in a parsed JSON value."""
  if isinstance(value, str):
    yield value
  elif isinstance(value, (list, dict)):
    for item in (value.values() if isinstance(value, dict) else value):
      yield from _strings(item)


def _copied_folders():
  with open(os.path.join(REPO_ROOT, 'Dockerfile'), encoding='utf-8') as f:
    sources = re.findall(r'^COPY\s+(?!--from)(\S+)\s+\S+', f.read(), re.M)
  return {source.rstrip('/') for source in sources}


def _in_image(path):
  """The repository file a /pipeline/... path is, checked to be in the image."""
  code_root = config_lib.DeployConfig.code_root
  assert path.startswith(code_root + '/'), path
  relative = os.path.relpath(path, code_root)
  assert relative.split(os.sep)[0] in _copied_folders(), relative
  assert os.path.exists(os.path.join(REPO_ROOT, relative)), relative
  return relative


def test_every_pipeline_node_is_a_task(spec):
  nodes = {node.id for node in dag.create_pipeline(
      _config(), code_root='/pipeline').components}
  expected = {'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen',
              'ExampleValidator', 'DataGate', 'Transform', 'Trainer', 'Evaluator',
              'RegistryPusher', *RESOLVER_TASKS}
  assert nodes == expected - set(RESOLVER_TASKS) | {'latest_blessed_model_resolver'}
  assert set(_tasks(spec)) == expected
  baseline = _tasks(spec)['Evaluator']['inputs']['artifacts']['baseline_model']
  assert baseline['taskOutputArtifact']['producerTask'] == RESOLVER_TASKS[1]
  assert set(_tasks(spec)['RegistryPusher']['dependentTasks']) == {
      'Evaluator', 'ImageExampleGen', 'Trainer', 'Transform'}
  # Transform waits for the data gate (a task dependency, not a data one).
  assert 'DataGate' in _tasks(spec)['Transform']['dependentTasks']


def test_every_container_runs_the_configured_image(spec):
  executors = spec['pipelineSpec']['deploymentSpec']['executors']
  containers = {name: e['container'] for name, e in executors.items() if 'container' in e}
  assert len(containers) == 9
  assert {name for name, e in executors.items() if 'resolver' in e} == {
      f'{task}_executor' for task in RESOLVER_TASKS}
  for container in containers.values():
    assert container['image'] == IMAGE
    # The command replaces the image's Beam-worker entrypoint.
    assert container['command'] == [
        'python', '-m', 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor']


def test_custom_executors_are_code_in_the_image(spec):
  for task in ('ImageExampleGen', 'DataGate', 'RegistryPusher'):
    args = _container(spec, task)['args']
    class_path = args[args.index('--executor_class_path') + 1]
    module = class_path.rsplit('.', 1)[0]
    _in_image(os.path.join('/pipeline', *module.split('.')) + '.py')


def test_module_files_and_schema_resolve_inside_the_image(spec):
  for task, module in (('Transform', dag.TRANSFORM_MODULE), ('Trainer', dag.TRAINER_MODULE)):
    parameters = _parameters(spec, task)
    assert _in_image(parameters['module_file']['stringValue']) == module
    # No wheel of the module file uploaded to the pipeline root instead.
    assert 'module_path' not in parameters
  schema_file = _parameters(spec, 'ImportSchemaGen')['schema_file']['stringValue']
  assert _in_image(schema_file) == os.path.join('schema', 'schema.pbtxt')
  input_base = _parameters(spec, 'ImageExampleGen')['input_base']['stringValue']
  assert _in_image(input_base) == os.path.join('data', 'fashion_mnist_sample')


def test_beam_components_get_the_dataflow_arguments(spec):
  expected = beam_args.beam_pipeline_args(_config())
  assert '--runner=DataflowRunner' in expected
  assert f'--sdk_container_image={IMAGE}' in expected
  for task in BEAM_COMPONENTS:
    args = _container(spec, task)['args']
    assert args[-len(expected):] == expected, task
  # The driver that fingerprints the input files before the cache check, too.
  pre_cache_check = _container(spec, 'ImageExampleGen')['lifecycle']['preCacheCheck']
  assert pre_cache_check['args'][-len(expected):] == expected


def test_outputs_go_under_the_remote_output_dir(spec):
  assert spec['runtimeConfig']['gcsOutputDirectory'] == f'{OUTPUT_DIR}/pipeline_root'
  registry = _parameters(spec, 'RegistryPusher')['registry_dir']['stringValue']
  assert registry == f'{OUTPUT_DIR}/registry'


def test_placeholders_left_are_only_those_kfp_fills_at_run_time(spec, spec_file):
  with open(spec_file, encoding='utf-8') as f:
    text = f.read()
  found = {placeholder for value in _strings(spec)
           for placeholder in re.findall(r'\{\{.*?\}\}', value)}
  assert found == KFP_RUNTIME_PLACEHOLDERS
  # Every parameter is a constant: no pipeline parameter is left to fill in.
  assert 'inputDefinitions' not in spec['pipelineSpec']['root']
  for task in _tasks(spec):
    for value in _tasks(spec)[task].get('inputs', {}).get('parameters', {}).values():
      assert set(value) == {'runtimeValue'} and 'constantValue' in value['runtimeValue']
  # Nothing points at this machine.
  assert REPO_ROOT not in text
  assert 'pipelineparam' not in text


def test_schedule_request_carries_the_cron_and_the_spec(spec, spec_file):
  request = kubeflow.build_vertex_request(
      _config(), spec_file, credentials=AnonymousCredentials())
  assert request.schedule['cron'] == 'TZ=UTC 0 3 * * *'
  assert request.schedule['max_concurrent_run_count'] == 1
  assert request.schedule['display_name'] == 'image-classifier-schedule'
  # `send` passes these as they are to the installed aiplatform's create_schedule.
  inspect.signature(request.job.create_schedule).bind(**request.schedule)
  job = request.job.to_dict()
  # The spec as compiled, with caching (pipeline.enable_cache) set on every task.
  for task in job['pipelineSpec']['root']['dag']['tasks'].values():
    assert task.pop('cachingOptions') == {'enableCache': True}
  compiled = json.loads(json.dumps(spec['pipelineSpec']))
  for task in compiled['root']['dag']['tasks'].values():
    task.pop('cachingOptions', None)
  assert job['pipelineSpec'] == compiled
  assert job['runtimeConfig']['gcsOutputDirectory'] == f'{OUTPUT_DIR}/pipeline_root'
  assert (request.job.project, request.job.location) == ('p', 'us-central1')


def test_configured_schedule_and_a_single_run(spec_file):
  config = _config('deploy.schedule=30 1 * * 1', 'deploy.timezone=Europe/Berlin',
                   'gcp.service_account=runner@p.iam.gserviceaccount.com')
  request = kubeflow.build_vertex_request(
      config, spec_file, credentials=AnonymousCredentials())
  assert request.schedule['cron'] == 'TZ=Europe/Berlin 30 1 * * 1'
  assert request.schedule['service_account'] == 'runner@p.iam.gserviceaccount.com'
  once = kubeflow.build_vertex_request(
      config, spec_file, once=True, credentials=AnonymousCredentials())
  assert once.schedule is None
  assert once.service_account == 'runner@p.iam.gserviceaccount.com'


def test_yaml_spec_is_the_pipeline_spec_and_the_root_comes_from_config(tmp_path):
  path = kubeflow.compile_spec(_config(), str(tmp_path / 'spec.yaml'))
  with open(path, encoding='utf-8') as f:
    text = f.read()
  assert text.startswith('# PIPELINE DEFINITION')
  assert set(yaml.safe_load(text)['root']['dag']['tasks']) >= set(BEAM_COMPONENTS)
  job = kubeflow.build_vertex_request(
      _config(), path, once=True, credentials=AnonymousCredentials()).job
  assert job.runtime_config.gcs_output_directory == f'{OUTPUT_DIR}/pipeline_root'
  # Local runs in this process still package module files as TFX does.
  assert 'UNSUPPORTED_DO_NOT_PACKAGE_USER_MODULES' not in os.environ


def test_local_output_dir_is_refused_with_the_key_to_set(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['compile', '--output', str(tmp_path / 'spec.json'),
              '--set', f'pipeline.output_dir={tmp_path}'])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert error.startswith('error: pipeline.output_dir=') and 'gs://' in error
  assert not os.path.exists(tmp_path / 'spec.json')


@pytest.mark.parametrize('override, key', [
    ('pipeline.registry_dir=/srv/registry', 'pipeline.registry_dir'),
    ('data.path=/srv/images', 'data.path'),
    ('data.path=gs://bucket/images', 'data.split'),   # layout unknowable offline
])
def test_paths_a_remote_step_cannot_see_are_refused(override, key):
  with pytest.raises(ValueError, match=re.escape(key)):
    kubeflow.check_paths(_config(override))


def test_schedule_errors_name_what_to_fix(spec_file, tmp_path):
  config = config_lib.load_config(None, OVERRIDES[:2])
  with pytest.raises(ValueError, match='gcp.project'):
    kubeflow.build_vertex_request(config, spec_file, credentials=AnonymousCredentials())
  with pytest.raises(ValueError, match='deploy.timezone'):
    kubeflow.vertex_cron(_config('deploy.timezone=Mars/Olympus'))
  with pytest.raises(ValueError, match='compiled for pipeline root'):
    kubeflow.build_vertex_request(_config('pipeline.output_dir=gs://other'), spec_file,
                                  credentials=AnonymousCredentials())
  with pytest.raises(FileNotFoundError):
    kubeflow.build_vertex_request(_config(), str(tmp_path / 'missing.json'),
                                  credentials=AnonymousCredentials())


def test_the_trainer_can_run_on_vertex_ai_training_with_a_gpu(tmp_path):
  """gcp.training_machine_type swaps in TFX's Vertex AI Trainer extension: the
  step submits the same module file as a custom job on that machine and GPU,
  running the pipeline's image (checked in the compiled spec; no cloud here)."""
  path = kubeflow.compile_spec(_config(
      'gcp.training_machine_type=n1-standard-8',
      'gcp.training_accelerator_type=NVIDIA_TESLA_T4',
      'gcp.training_accelerator_count=1'), str(tmp_path / 'spec.json'))
  with open(path, encoding='utf-8') as f:
    spec = json.load(f)
  args = _container(spec, 'Trainer')['args']
  assert args[args.index('--executor_class_path') + 1] == (
      'tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor')
  parameters = _parameters(spec, 'Trainer')
  assert _in_image(parameters['module_file']['stringValue']) == dag.TRAINER_MODULE
  custom_config = json.loads(parameters['custom_config']['stringValue'])
  assert custom_config['ai_platform_enable_vertex'] is True
  assert custom_config['ai_platform_vertex_region'] == 'us-central1'
  assert custom_config['ai_platform_training_args'] == {
      'project': 'p',
      'worker_pool_specs': [{
          'machine_spec': {'machine_type': 'n1-standard-8',
                           'accelerator_type': 'NVIDIA_TESLA_T4',
                           'accelerator_count': 1},
          'replica_count': 1,
          'container_spec': {'image_uri': IMAGE}}]}
  # The module file's own settings travel beside the job's.
  assert custom_config['training'] == dag.components_config(_config())['training']


def test_the_backbone_pass_can_run_as_a_beam_step_on_dataflow(tmp_path):
  """training.beam_features adds BackboneFeatures: a Beam step with the
  Dataflow arguments, whose output is the Trainer's examples."""
  path = kubeflow.compile_spec(_config('training.beam_features=true', 'data.unlabeled_path='
                                       'gs://bucket/unlabeled'), str(tmp_path / 'spec.json'))
  with open(path, encoding='utf-8') as f:
    spec = json.load(f)
  args = _container(spec, 'BackboneFeatures')['args']
  expected = beam_args.beam_pipeline_args(_config())
  assert args[-len(expected):] == expected
  class_path = args[args.index('--executor_class_path') + 1]
  _in_image(os.path.join('/pipeline', *class_path.rsplit('.', 1)[0].split('.')) + '.py')
  parameters = _parameters(spec, 'BackboneFeatures')
  assert json.loads(parameters['labeled_splits']['stringValue']) == ['train']
  assert json.loads(parameters['clean_splits']['stringValue']) == ['eval', 'unlabeled']
  examples = _tasks(spec)['Trainer']['inputs']['artifacts']['examples']
  assert examples['taskOutputArtifact'] == {'producerTask': 'BackboneFeatures',
                                            'outputArtifactKey': 'features'}
  assert json.loads(_parameters(spec, 'Trainer')['train_args']['stringValue'])['splits'] == [
      'train', 'unlabeled']


@pytest.mark.parametrize('overrides, message', [
    (['gcp.training_accelerator_type=NVIDIA_TESLA_T4',
      'gcp.training_accelerator_count=1'], 'need gcp.training_machine_type'),
    (['gcp.training_machine_type=n1-standard-8',
      'gcp.training_accelerator_count=2'], 'go together'),
    (['gcp.training_machine_type=n1-standard-8', 'gcp.project='], 'needs gcp.project'),
])
def test_vertex_training_settings_that_cannot_work_are_refused(overrides, message):
  with pytest.raises(ValueError, match=message):
    _config(*overrides)


def test_a_local_run_refuses_vertex_training():
  config = config_lib.load_config(None, ['gcp.project=p',
                                         'gcp.training_machine_type=n1-standard-8'])
  with pytest.raises(ValueError, match='cannot read a local run'):
    config.check_local_folders()
