"""Configuration: defaults, YAML, --set overrides, and clear errors."""

import pytest

from pipeline import config as config_lib
from pipeline import schema


def test_defaults_are_valid_and_point_at_the_bundled_sample():
  config = config_lib.load_config()
  assert config.data.path.endswith('fashion_mnist_sample')
  assert config.pipeline.registry.endswith('registry')
  assert len(schema.class_names(config.data.schema_file)) == 10


def test_yaml_then_overrides(tmp_path):
  path = tmp_path / 'run.yaml'
  path.write_text('training:\n  cv_folds: 3\n  fine_tune_learning_rate: 1\nmodel:\n  backbone: mobilenet_v2\n')
  config = config_lib.load_config(str(path), ['training.cv_folds=5',
                                              'beam.extra_args=[--a, --b]'])
  assert config.training.cv_folds == 5                # --set wins over the file
  assert config.training.fine_tune_learning_rate == 1.0   # int accepted for float
  assert config.model.backbone == 'mobilenet_v2'
  assert config.beam.extra_args == ('--a', '--b')


@pytest.mark.parametrize('override, message', [
    ('training.epoch=3', "Unknown config key(s) ['training.epoch']"),
    ('training.epochs=3', "Unknown config key(s) ['training.epochs']"),
    ('training.cv_folds=three', 'training.cv_folds must be int'),
    ('training.cv_folds=1', 'training.cv_folds must be at least 2'),
    ('semi_supervised.pseudo_label_fraction=0', 'semi_supervised.pseudo_label_fraction must be in (0, 1]'),
    ('data.eval_fraction=1.5', 'data.eval_fraction must be in (0, 1)'),
    ('data.max_file_bytes=0', 'data.max_file_bytes must be positive'),
    ('epochs=3', 'expected section.key=value'),
    ('training.class_weights=1', 'training.class_weights must be bool'),
    ('beam.runner=samza', 'beam.runner must be one of'),
    ('deploy.schedule=nightly', 'deploy.schedule must be a 5-field cron expression'),
    ('export.max_quantized_drop=-0.01', 'export.max_quantized_drop must be in [0, 1]'),
    ('export.representative_images=0', 'export.representative_images must be at least 1'),
    ('export.score_images=0', 'export.score_images must be at least 1'),
    ('training.beam_features=true training.fine_tune_epochs=2',
     'training.beam_features gives the Trainer features, not images'),
])
def test_bad_values_fail_with_the_key_name(override, message):
  with pytest.raises(ValueError) as error:
    config_lib.load_config(None, override.split())
  assert message in str(error.value)


def test_set_values_are_read_by_the_keys_type_not_as_yaml():
  config = config_lib.load_config(None, [
      'deploy.schedule=*/5 * * * *', 'deploy.timezone="Europe/Berlin"',
      'gcp.project=12345', 'training.fine_tune_learning_rate=3e-3',
      'training.class_weights=False', 'model.weights=none', 'beam.extra_args='])
  assert config.deploy.schedule == '*/5 * * * *'
  assert config.deploy.timezone == 'Europe/Berlin'     # quotes around a value go
  assert config.gcp.project == '12345'
  assert config.training.fine_tune_learning_rate == 0.003
  assert config.training.class_weights is False
  assert config.model.weights == 'none'
  assert config.beam.extra_args == ()


def test_an_empty_value_is_empty_only_where_empty_means_none(tmp_path):
  config = config_lib.load_config(None, ['data.unlabeled_path=', 'gcp.project='])
  assert config.data.unlabeled_path == '' and config.gcp.project == ''
  path = tmp_path / 'run.yaml'
  path.write_text('data:\n  unlabeled_path:\ngcp:\n  service_account: ""\n')
  config = config_lib.load_config(str(path))
  assert config.data.unlabeled_path == '' and config.gcp.service_account == ''


@pytest.mark.parametrize('key, message', [
    ('pipeline.registry_dir', 'pipeline.registry_dir must not be empty (leave it out '
     'for <output_dir>/registry)'),
    ('pipeline.output_dir', 'pipeline.output_dir must not be empty'),
    ('data.path', 'data.path must not be empty'),
    ('deploy.schedule', 'deploy.schedule must not be empty'),
    ('training.cv_folds', 'training.cv_folds must be int, got an empty value'),
    ('evaluation.min_accuracy', 'evaluation.min_accuracy must be float, got an empty value'),
    ('training.class_weights', 'training.class_weights must be bool, got an empty value'),
])
def test_an_empty_value_elsewhere_is_refused(key, message, tmp_path):
  with pytest.raises(ValueError) as error:
    config_lib.load_config(None, [f'{key}='])
  assert str(error.value) == message
  section, name = key.split('.')
  path = tmp_path / 'run.yaml'
  path.write_text(f'{section}:\n  {name}:\n')
  with pytest.raises(ValueError) as error:
    config_lib.load_config(str(path))
  assert str(error.value) == message


@pytest.mark.parametrize('override, message', [
    ('training.fine_tune_learning_rate=nan', 'training.fine_tune_learning_rate must be a finite float'),
    ('training.batch_size=8.5', "training.batch_size must be int, got '8.5'"),
    ('training.class_weights=maybe', "training.class_weights must be bool, got 'maybe'"),
    ('beam.extra_args=[--a, [--b', 'beam.extra_args must be a list'),
])
def test_bad_set_values_fail_in_one_line(override, message):
  with pytest.raises(ValueError) as error:
    config_lib.load_config(None, [override])
  assert message in str(error.value) and '\n' not in str(error.value)


def test_a_yaml_file_that_does_not_parse_fails_in_one_line(tmp_path):
  path = tmp_path / 'run.yaml'
  path.write_text('deploy:\n  schedule: */5 * * * *\n')
  with pytest.raises(ValueError) as error:
    config_lib.load_config(str(path))
  assert str(error.value).startswith(f'{path}: not valid YAML')
  assert 'line 2' in str(error.value) and '\n' not in str(error.value)


@pytest.mark.parametrize('argv, message', [
    (['run', '--data', '/nonexistent/images'], 'Image folder /nonexistent/images does not exist'),
    (['run', '--set', 'training.cv_folds=1'], 'training.cv_folds must be at least 2'),
    (['run', '--set', 'pipeline.registry_dir='], 'pipeline.registry_dir must not be empty'),
    (['run', '--set', 'training.cv_folds='], 'training.cv_folds must be int, got an empty value'),
    (['run', '--set', 'deploy.schedule=*/5 * *'],
     'deploy.schedule must be a 5-field cron expression'),
    (['predict', '--model', '/nonexistent/model', 'x.png'], 'No published version'),
])
def test_cli_reports_bad_input_in_one_line(argv, message):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from helpers import REPO_ROOT  # pylint: disable=g-import-not-at-top
  result = subprocess.run([sys.executable, '-m', 'pipeline', *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  error_lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(error_lines) == 1 and message in result.stderr, result.stderr[-1000:]
  assert 'Traceback' not in result.stderr


def test_module_files_read_back_every_setting_the_dag_sends():
  """custom_config goes through JSON to the module files; what they parse is
  what the DAG built, field for field, extra TFX keys ignored."""
  import json  # pylint: disable=g-import-not-at-top
  from models.settings import ModelSettings  # pylint: disable=g-import-not-at-top
  from pipeline import dag  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(None, ['training.seed=7', 'ood.neighbours=9',
                                         'augmentation.zoom=0.3', 'model.image_size=96'])
  sent = json.loads(json.dumps({**dag.components_config(config),
                                'ai_platform_enable_vertex': True}))
  settings = ModelSettings.from_custom_config(sent)
  assert settings == dag.model_settings(config)
  assert (settings.training.seed, settings.ood.neighbours, settings.augmentation.zoom,
          settings.image_size) == (7, 9, 0.3, 96)
