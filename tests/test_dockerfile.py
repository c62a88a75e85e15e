"""The Dockerfile cannot be built here (no Docker engine), so check what it
references: the lock it installs, the code it copies, the module files the
pipeline resolves inside the image, the weights packages and the Keras switch."""

import os
import re
import shlex

from models.backbones import efficientnet_lite
from pipeline import config as config_lib
from pipeline import dag

from helpers import REPO_ROOT

CODE_DIR_IN_IMAGE = '/pipeline'


def _dockerfile():
  with open(os.path.join(REPO_ROOT, 'Dockerfile'), encoding='utf-8') as f:
    return f.read()


def _locked_version(package):
  with open(os.path.join(REPO_ROOT, 'requirements', 'core.lock')) as f:
    return re.search(rf'^{re.escape(package)}==(\S+)', f.read(), re.M).group(1)


def test_base_image_is_python_310():
  assert re.search(r'^FROM python:3\.10[-\w.]*$', _dockerfile(), re.M)


def test_beam_worker_boot_matches_the_locked_beam_and_python():
  text = _dockerfile()
  stage = re.search(r'^FROM apache/beam_python(\S+)_sdk:(\S+) AS (\w+)$', text, re.M)
  assert stage, 'no Beam SDK stage'
  python, beam_version, name = stage.groups()
  assert python == '3.10'
  assert beam_version == _locked_version('apache-beam')
  assert re.search(rf'^COPY --from={name} /opt/apache/beam /opt/apache/beam$', text, re.M)
  assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', text, re.M)


def test_copied_sources_exist_and_install_from_the_lock():
  text = _dockerfile()
  sources = re.findall(r'^COPY\s+(?!--from)(\S+)\s+\S+', text, re.M)
  assert sources
  for source in sources:
    assert os.path.exists(os.path.join(REPO_ROOT, source)), source
  assert 'requirements/core.lock' in sources
  assert re.search(r'uv pip sync .*--require-hashes requirements/core\.lock', text)
  with open(os.path.join(REPO_ROOT, 'requirements', 'core.lock')) as f:
    lock = f.read()
  for package in ('tfx==1.16.0', 'tensorflow==2.16.2', 'tf-keras==',
                  *(f'{variant.package.replace("_", "-")}==0.1.0'
                    for variant in efficientnet_lite.VARIANTS.values())):
    assert package in lock, package


def test_image_checks_every_offline_weights_file():
  text = _dockerfile()
  for variant in efficientnet_lite.VARIANTS.values():
    assert f"'{variant.package}': '{variant.weights_file}'" in text, variant.title


def test_module_files_resolve_inside_the_image():
  text = _dockerfile()
  assert re.search(rf'^WORKDIR {CODE_DIR_IN_IMAGE}$', text, re.M)
  assert f'PYTHONPATH={CODE_DIR_IN_IMAGE}' in text
  copied = {source.rstrip('/') for source in re.findall(r'^COPY\s+(\S+)', text, re.M)}
  for path in (dag.TRANSFORM_MODULE, dag.TRAINER_MODULE,
               os.path.relpath(config_lib.DataConfig.schema_file, REPO_ROOT),
               os.path.relpath(config_lib.DataConfig.path, REPO_ROOT)):
    assert path.split(os.sep)[0] in copied, path
    assert os.path.exists(os.path.join(REPO_ROOT, path)), path
  assert config_lib.DeployConfig.code_root == CODE_DIR_IN_IMAGE


def _instructions(text):
  """(INSTRUCTION, arguments) as Docker reads them: comment and empty lines
  dropped, also inside a continued instruction, and `\\` continuations joined."""
  instructions, current = [], ''
  for line in text.splitlines():
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    if line.rstrip().endswith('\\'):
      current += line.rstrip()[:-1] + ' '
      continue
    keyword, _, arguments = (current + line).strip().partition(' ')
    instructions.append((keyword.upper(), arguments.strip()))
    current = ''
  return instructions


def _final_image_env(text):
  """What the ENV instructions set in the last stage, including those of the
  earlier stages it is built FROM (not the base image's own variables)."""
  stages, env = {}, {}
  for keyword, arguments in _instructions(text):
    if keyword == 'FROM':
      words = [word for word in arguments.split() if not word.startswith('--')]
      env = dict(stages.get(words[0].lower(), {}))
      if len(words) == 3 and words[1].upper() == 'AS':
        stages[words[2].lower()] = env
    elif keyword == 'ENV':
      words = shlex.split(arguments)
      if '=' in words[0]:
        env.update(word.split('=', 1) for word in words)
      else:  # The legacy form: ENV NAME the rest of the line.
        env[words[0]] = arguments.split(None, 1)[1]
  return env


def test_env_parser_reads_only_what_docker_sets():
  assert _final_image_env(
      'FROM base AS first\n'
      'ENV A=stage\n'
      '# ENV B=comment\n'
      'FROM python:3.10 AS second\n'
      'ENV B=1 \\\n'
      '# ENV C=comment inside the continuation\n'
      '    C="two words"\n'
      'ENV D legacy form\n'
      'FROM second\n'
      'ENV B=0\n') == {'B': '0', 'C': 'two words', 'D': 'legacy form'}


def test_keras_2_is_selected_before_tensorflow_loads():
  assert _final_image_env(_dockerfile()).get('TF_USE_LEGACY_KERAS') == '1'
