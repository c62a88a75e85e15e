"""The registry API and CLI (registry/, pipeline/lineage.py): listing,
lineage from ML Metadata, aliases (promote, rollback, history, concurrency),
resolving a reference to a loadable SavedModel, TF Serving version labels.

Reads the session's real pipeline run (tests/conftest.py) and never writes to
it: alias tests work on a hard-linked copy of its registry, grown to three
versions by publishing version 1's SavedModel again.

Top-level imports stay free of TensorFlow: the concurrent promoters are
spawned processes that import this module.
"""

import datetime
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading

import pytest

from components import artifact_readers
from pipeline import __main__ as cli
from registry import Registry

from helpers import E2E_CLASSES, REPO_ROOT

MODEL = 'image_classifier'


def _cli(capsys, *argv):
  """Runs `python -m pipeline registry ...` in-process; returns (code, out, err)."""
  try:
    code = cli.main(['registry', *argv])
  except SystemExit as exit_:
    code = exit_.code
  out, err = capsys.readouterr()
  return code, out, err


@pytest.fixture(scope='module')
def run_outputs(e2e_first_run, e2e_workspace):
  """The first real run's output folder: registry/ and metadata.sqlite (read only)."""
  del e2e_first_run
  return e2e_workspace['output_dir']


@pytest.fixture(scope='module')
def three_versions(run_outputs, tmp_path_factory):
  """A registry of versions 1 (the real run's) and 2, 3 (its SavedModel again)."""
  from registry import layout  # pylint: disable=g-import-not-at-top
  from registry import publishing  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('registry_template') / 'registry'
  shutil.copytree(os.path.join(run_outputs, 'registry', MODEL, '1'), root / MODEL / '1')
  first = str(root / MODEL / '1')
  record = layout.read_record(first)
  for _ in range(2):
    publishing.publish(first, str(root), MODEL, layout.read_labels(first),
                      {**record, 'pushed_at': datetime.datetime.now(
                          datetime.timezone.utc).isoformat()})
  return str(root)


@pytest.fixture
def registry_dir(three_versions, tmp_path):
  """A private copy (hard links: alias tests only write under aliases/)."""
  copy = tmp_path / 'registry'
  shutil.copytree(three_versions, copy, copy_function=os.link)
  return str(copy)


# Listing and lineage on the real run.

def test_list_and_latest_through_the_cli(run_outputs, capsys):
  record = Registry(os.path.join(run_outputs, 'registry'), MODEL).record(1)
  code, out, _ = _cli(capsys, 'list', '--output', run_outputs)
  assert code == 0
  header, first = out.splitlines()[:2]
  assert header.split()[:2] == ['VERSION', 'PUSHED']
  assert first.split()[0] == '1'
  assert f'{record["evaluation"]["accuracy"]:.4f}' in first
  assert f' {record["evaluation"]["example_count"]} ' in first

  code, out, _ = _cli(capsys, 'list', '--json', '--output', run_outputs)
  rows = json.loads(out)
  assert code == 0 and rows[0]['version'] == 1
  assert rows[0]['input_fingerprint'] == record['data']['input_fingerprint']
  assert rows[0]['fingerprint'] in first
  assert rows[0]['baseline_accuracy'] is None and rows[0]['baseline_version'] is None
  assert rows[0]['pipeline_run_id'] == record['pipeline_run_id']

  code, out, _ = _cli(capsys, 'latest', '--json', '--output', run_outputs)
  latest = json.loads(out)
  assert code == 0
  assert latest['version'] == rows[-1]['version']
  assert latest['labels'] == E2E_CLASSES
  assert os.path.isfile(os.path.join(latest['path'], 'saved_model.pb'))


def test_show_gives_the_lineage_of_version_1_from_ml_metadata(run_outputs, capsys):
  code, out, _ = _cli(capsys, 'show', '1', '--json', '--output', run_outputs)
  assert code == 0
  shown = json.loads(out)
  record, lineage = shown['record'], shown['lineage']
  run_id = record['pipeline_run_id']
  assert lineage['pipeline_run']['id'] == run_id and lineage['pipeline_run']['found']
  assert lineage['model']['uri'] == record['model_artifact_uri']
  expected = {
      'examples': ('ImageExampleGen', 'Examples'),
      'schema': ('ImportSchemaGen', 'Schema'),
      'statistics': ('StatisticsGen', 'ExampleStatistics'),
      'transform_graph': ('Transform', 'TransformGraph'),
      'model': ('Trainer', 'Model'),
      'evaluation': ('Evaluator', 'ModelEvaluation'),
      'blessing': ('Evaluator', 'ModelBlessing'),
  }
  for role, (component, type_name) in expected.items():
    artifact = lineage[role]
    assert (artifact['component'], artifact['type']) == (component, type_name), role
    assert artifact['pipeline_run'] == run_id, role   # the first run made them all
    assert os.path.exists(artifact['uri']), role
  assert lineage['examples']['uri'] == record['data']['examples_uri']
  assert lineage['examples']['properties']['input_fingerprint'] == (
      record['data']['input_fingerprint'])
  assert lineage['blessing']['properties']['blessed'] == 1
  assert lineage['baseline_model'] is None          # the first model had none
  assert artifact_readers.class_names(lineage['transform_graph']['uri']) == E2E_CLASSES

  code, out, _ = _cli(capsys, 'show', '1', '--output', run_outputs)
  assert code == 0
  assert out.startswith(f'{MODEL} version 1 ')
  for name in ('ImageExampleGen', 'ImportSchemaGen', 'Transform', 'Trainer', run_id):
    assert name in out
  # One line per TFLite model of the record, with its size and eval accuracy.
  for name, model in record['exports']['models'].items():
    (line,) = [line for line in out.splitlines() if line.split()[:1] == [name]]
    assert f' {model["bytes"]} bytes ' in line and f'accuracy {model["accuracy"]:.4f}' in line
    assert line.endswith('published') if model['published'] else 'NOT published: it ' in line


def _fake_tfx_store(path):
  """A store shaped like TFX's: a first run, a cached rerun whose Evaluator
  judges the same model against itself, and a third run with a new model."""
  import ml_metadata as mlmd  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  connection = pb.ConnectionConfig()
  connection.sqlite.filename_uri = path
  store = mlmd.MetadataStore(connection)
  types = {}

  def type_id(kind, name):
    if (kind, name) not in types:
      put = {'artifact': (store.put_artifact_type, pb.ArtifactType),
             'execution': (store.put_execution_type, pb.ExecutionType),
             'context': (store.put_context_type, pb.ContextType)}[kind]
      types[kind, name] = put[0](put[1](name=name))
    return types[kind, name]

  def context(kind, name):
    [context_id] = store.put_contexts([pb.Context(type_id=type_id('context', kind),
                                                  name=name)])
    return pb.Context(id=context_id, type_id=type_id('context', kind), name=name)

  pipeline = context('pipeline', 'p')
  nodes = {}

  def run(name, steps):
    run_context = context('pipeline_run', name)
    store.put_parent_contexts([pb.ParentContext(child_id=run_context.id,
                                                parent_id=pipeline.id)])
    for node, state, inputs, outputs in steps:
      if node not in nodes:
        nodes[node] = context('node', f'p.{node}')
      pairs = {}   # one event per artifact, with a path per key (as TFX does)
      for event_type, artifacts in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
        for key, artifact in artifacts.items():
          _, event = pairs.setdefault(id(artifact), (artifact, pb.Event(type=event_type)))
          event.path.steps.add().key = key
          event.path.steps.add().index = 0
      pairs = list(pairs.values())
      execution = pb.Execution(type_id=type_id('execution', node), last_known_state=state)
      _, ids, _ = store.put_execution(execution, pairs, [run_context, nodes[node]])
      for (artifact, _), artifact_id in zip(pairs, ids):
        artifact.id = artifact_id

  def artifact(type_name, uri):
    return pb.Artifact(type_id=type_id('artifact', type_name), uri=uri)

  a = {name: artifact(type_name, f'/{name}') for name, type_name in [
      ('examples', 'Examples'), ('schema', 'Schema'), ('statistics', 'ExampleStatistics'),
      ('graph', 'TransformGraph'), ('model', 'Model'), ('model2', 'Model'),
      ('evaluation1', 'ModelEvaluation'), ('blessing1', 'ModelBlessing'),
      ('evaluation2', 'ModelEvaluation'), ('blessing2', 'ModelBlessing'),
      ('evaluation3', 'ModelEvaluation'), ('blessing3', 'ModelBlessing')]}
  done, cached = pb.Execution.COMPLETE, pb.Execution.CACHED
  run('run1', [
      ('ImageExampleGen', done, {}, {'examples': a['examples']}),
      ('ImportSchemaGen', done, {}, {'schema': a['schema']}),
      ('StatisticsGen', done, {'examples': a['examples']}, {'statistics': a['statistics']}),
      ('Transform', done, {'examples': a['examples'], 'schema': a['schema']},
       {'transform_graph': a['graph']}),
      ('Trainer', done, {'examples': a['examples'], 'transform_graph': a['graph'],
                         'schema': a['schema']}, {'model': a['model']}),
      ('Evaluator', done, {'examples': a['examples'], 'model': a['model']},
       {'evaluation': a['evaluation1'], 'blessing': a['blessing1']}),
  ])
  run('run2', [
      ('Trainer', cached, {'examples': a['examples'], 'transform_graph': a['graph'],
                           'schema': a['schema']}, {'model': a['model']}),
      ('Evaluator', done, {'model': a['model'], 'baseline_model': a['model']},
       {'evaluation': a['evaluation2'], 'blessing': a['blessing2']}),
  ])
  run('run3', [
      ('Trainer', done, {'examples': a['examples'], 'transform_graph': a['graph'],
                         'schema': a['schema']}, {'model': a['model2']}),
      ('Evaluator', done, {'model': a['model2'], 'baseline_model': a['model']},
       {'evaluation': a['evaluation3'], 'blessing': a['blessing3']}),
  ])
  return a


def test_lineage_follows_the_publishing_run_past_cached_reruns(tmp_path):
  from pipeline import lineage  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'metadata.sqlite')
  a = _fake_tfx_store(path)
  first = lineage.model_lineage(path, {'model_artifact_uri': '/model',
                                       'pipeline_run_id': 'run1'})
  assert first['pipeline_run'] == {
      'id': 'run1', 'found': True, 'context_id': first['pipeline_run']['context_id'],
      'created_at': first['pipeline_run']['created_at'], 'pipeline': 'p'}
  roles = {role: (entry['uri'], entry['component'], entry['pipeline_run'])
           for role, entry in first.items()
           if isinstance(entry, dict) and 'uri' in entry}
  assert roles == {
      'model': ('/model', 'Trainer', 'run1'),   # not the cached run2 Trainer
      'transform_graph': ('/graph', 'Transform', 'run1'),
      'schema': ('/schema', 'ImportSchemaGen', 'run1'),
      'examples': ('/examples', 'ImageExampleGen', 'run1'),
      'statistics': ('/statistics', 'StatisticsGen', 'run1'),
      'evaluation': ('/evaluation1', 'Evaluator', 'run1'),
      'blessing': ('/blessing1', 'Evaluator', 'run1'),
  }
  assert first['model']['artifact_id'] == a['model'].id
  assert first['baseline_model'] is None
  # The same model as judged in the rerun: against itself.
  rerun = lineage.model_lineage(path, {'model_artifact_uri': '/model',
                                       'pipeline_run_id': 'run2'})
  assert rerun['evaluation']['uri'] == '/evaluation2'
  assert rerun['baseline_model']['uri'] == '/model'
  assert lineage.baseline_model_uris(path, [
      {'model_artifact_uri': '/model', 'pipeline_run_id': 'run1'},
      {'model_artifact_uri': '/model2', 'pipeline_run_id': 'run3'},
      {'model_artifact_uri': '/elsewhere', 'pipeline_run_id': 'run9'}]) == {'/model2': '/model'}
  with pytest.raises(LookupError, match='No Model artifact with URI /elsewhere'):
    lineage.model_lineage(path, {'model_artifact_uri': '/elsewhere'})
  with pytest.raises(FileNotFoundError, match='No ML Metadata store'):
    lineage.model_lineage(str(tmp_path / 'missing.sqlite'), {'model_artifact_uri': '/m'})


# Aliases.

def test_promote_and_rollback_round_trip_with_history(registry_dir):
  registry = Registry(registry_dir, MODEL)
  assert registry.aliases() == {}
  registry.promote('production', 1, 'first model', who='alice')
  registry.promote('production', 3, 'better on the new data', who='bob')
  registry.promote('production', '2', 'prefer 2', who='carol')
  assert registry.resolve('production').version == 2
  assert registry.rollback('production', '2 misbehaves', who='dave')['version'] == 3
  assert registry.resolve('production').version == 3
  assert registry.rollback('production', '3 too', who='erin')['version'] == 1
  with pytest.raises(ValueError, match='no earlier version to roll back to'):
    registry.rollback('production', 'again', who='frank')
  # Promoting to the current target changes nothing.
  registry.promote('production', 1, 'no-op', who='gina')

  history = registry.history('production')
  assert [(e['action'], e['version'], e['previous'], e['who'], e['reason'])
          for e in history] == [
              ('promote', 1, None, 'alice', 'first model'),
              ('promote', 3, 1, 'bob', 'better on the new data'),
              ('promote', 2, 3, 'carol', 'prefer 2'),
              ('rollback', 3, 2, 'dave', '2 misbehaves'),
              ('rollback', 1, 3, 'erin', '3 too')]
  times = [datetime.datetime.fromisoformat(e['when']) for e in history]
  assert times == sorted(times) and all(t.tzinfo is not None for t in times)
  assert registry.aliases()['production']['version'] == 1
  assert registry.aliases_by_version() == {1: ['production']}
  # One file per alias and the lock: no temporary file left behind.
  assert sorted(os.listdir(os.path.join(registry_dir, MODEL, 'aliases'))) == [
      '.lock', 'production.json']
  # TF Serving and the low-level registry still see only the integer versions.
  assert registry.version_numbers() == [1, 2, 3]


def test_promote_rollback_history_through_the_cli(registry_dir, capsys):
  where = ('--registry', registry_dir)
  assert _cli(capsys, 'promote', 'staging', '2', '--reason', 'try 2', '--who', 'eve',
              *where)[:2] == (0, 'staging -> version 2 (was unset)\n')
  assert _cli(capsys, 'promote', 'staging', 'latest', '--reason', 'try newest',
              *where)[:2] == (0, 'staging -> version 3 (was 2)\n')
  assert _cli(capsys, 'rollback', 'staging', '--reason', 'oops', *where)[:2] == (
      0, 'staging -> version 2 (was 3)\n')
  code, out, _ = _cli(capsys, 'history', 'staging', '--json', *where)
  history = json.loads(out)
  assert code == 0
  assert [(e['action'], e['version']) for e in history] == [
      ('promote', 2), ('promote', 3), ('rollback', 2)]
  assert history[0]['who'] == 'eve' and history[1]['who']   # the login name by default
  code, out, _ = _cli(capsys, 'aliases', *where)
  assert code == 0 and out.startswith('staging -> version 2  (rollback by ')
  assert out.rstrip().endswith(': oops)')
  code, out, _ = _cli(capsys, 'list', '--json', *where, '--metadata',
                      os.path.join(registry_dir, 'none.sqlite'))
  assert code == 0
  assert {row['version']: row['aliases'] for row in json.loads(out)} == {
      1: [], 2: ['staging'], 3: []}


def _promoter(registry_dir, index, rounds, start, results):
  """One concurrent promoter: which of its promotions changed the alias."""
  registry = Registry(registry_dir, MODEL)
  start.wait()
  changed = []
  for i in range(rounds):
    reason = f'promoter {index} round {i}'
    state = registry.promote('production', 1 + (index + i) % 3, reason, who=f'p{index}')
    if state['history'][-1]['reason'] == reason:
      changed.append(reason)
  results.put(changed)


def test_concurrent_promoters_lose_no_history_and_readers_see_valid_json(registry_dir):
  processes, rounds = 8, 15
  alias_file = os.path.join(registry_dir, MODEL, 'aliases', 'production.json')
  registry = Registry(registry_dir, MODEL)
  registry.promote('production', 1, 'initial', who='setup')
  context = multiprocessing.get_context('spawn')
  start, results = context.Event(), context.Queue()
  workers = [context.Process(target=_promoter,
                             args=(registry_dir, i, rounds, start, results))
             for i in range(processes)]
  for worker in workers:
    worker.start()
  problems, reads, done = [], [0], threading.Event()

  def read():
    while not done.is_set():
      try:
        with open(alias_file, encoding='utf-8') as f:
          state = json.load(f)
      except (OSError, ValueError) as error:
        problems.append(repr(error))
        continue
      reads[0] += 1
      if state['version'] != state['history'][-1]['version']:
        problems.append(f'inconsistent state {state["version"]}')

  reader = threading.Thread(target=read)
  reader.start()
  try:
    start.set()
    changed = [reason for _ in workers for reason in results.get(timeout=240)]
    for worker in workers:
      worker.join(timeout=60)
  finally:
    done.set()
    reader.join()
  assert [worker.exitcode for worker in workers] == [0] * processes
  assert problems == []
  assert reads[0] > 0
  history = registry.history('production')
  reasons = [entry['reason'] for entry in history[1:]]
  assert sorted(reasons) == sorted(changed)       # every change kept, once
  assert len(changed) > processes                  # and they did contend
  assert all(entry['previous'] == before['version']
             for before, entry in zip(history, history[1:]))
  assert registry.resolve('production').version == history[-1]['version']


def test_resolve_gives_a_loadable_saved_model_and_its_labels(registry_dir, e2e_workspace):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models import signatures  # pylint: disable=g-import-not-at-top
  registry = Registry(registry_dir, MODEL)
  registry.promote('production', 2, 'serve 2')
  model = registry.resolve('production')
  assert (model.version, model.path) == (2, os.path.join(registry_dir, MODEL, '2'))
  assert model.labels == E2E_CLASSES
  assert model.record['version'] == 2
  assert registry.resolve('latest').version == 3 == registry.latest().version
  assert registry.resolve(1).version == 1 == registry.resolve('1').version
  image = os.path.join(e2e_workspace['data'], E2E_CLASSES[0],
                       sorted(os.listdir(os.path.join(e2e_workspace['data'],
                                                      E2E_CLASSES[0])))[0])
  with open(image, 'rb') as f:
    content = f.read()
  serve = tf.saved_model.load(model.path).signatures[signatures.SERVING_SIGNATURE]
  outputs = serve(**{signatures.SERVING_INPUT: tf.constant([content])})
  assert outputs['probabilities'].shape == (1, len(model.labels))
  assert outputs['class_name'][0].numpy().decode() in model.labels


def test_serving_config_labels_the_aliased_versions(registry_dir, capsys):
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  registry = Registry(registry_dir, MODEL)
  registry.promote('production', 1, 'stable')
  registry.promote('production', 2, 'better')     # 1 stays loaded, for a rollback
  registry.promote('canary', 'latest', 'trying')
  code, out, _ = _cli(capsys, 'serving-config', '--registry', registry_dir)
  assert code == 0
  config = text_format.Parse(out, model_server_config_pb2.ModelServerConfig())
  [model] = config.model_config_list.config
  assert model.name == MODEL
  assert model.base_path == os.path.join(registry_dir, MODEL)
  assert list(model.model_version_policy.specific.versions) == [1, 2, 3]
  assert dict(model.version_labels) == {'production': 2, 'canary': 3}
  assert 'base_path: "/models/m"' in registry.serving_config('/models/m')


def test_bad_references_and_alias_names_are_clear_errors(registry_dir, tmp_path, capsys):
  where = ('--registry', registry_dir)
  registry = Registry(registry_dir, MODEL)
  registry.promote('production', 1, 'stable')
  before = registry.alias('production')
  cases = [
      (('show', '7'), 'error: No version 7 of'),
      (('show', 'staging'), "error: No alias 'staging'"),
      (('promote', '7', '1', '--reason', 'r'), "error: Invalid alias '7'"),
      (('promote', 'latest', '1', '--reason', 'r'), "error: 'latest' is reserved"),
      (('promote', 'prod/uction', '1', '--reason', 'r'), 'error: Invalid alias'),
      (('promote', 'production', '9', '--reason', 'r'), 'error: No version 9 of'),
      (('promote', 'production', '2', '--reason', ' '), 'error: A reason is required'),
      (('rollback', 'production', '--reason', 'r'), 'no earlier version to roll back'),
      (('rollback', 'canary', '--reason', 'r'), "error: No alias 'canary'"),
  ]
  for argv, message in cases:
    code, out, err = _cli(capsys, *argv, *where)
    assert (code, out) == (2, ''), argv
    assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
  assert registry.alias('production') == before      # no failure wrote anything
  code, _, err = _cli(capsys, 'promote', 'production', '2', *where)
  assert code == 2 and '--reason' in err              # argparse: required
  code, _, err = _cli(capsys, 'list', '--registry', str(tmp_path / 'nowhere'))
  assert code == 2 and err.startswith(f"error: No registry for '{MODEL}'")
  with pytest.raises(ValueError, match="No alias 'nope'"):
    registry.resolve('nope')
  with pytest.raises(FileNotFoundError, match=r'published: 1, 2, 3'):
    registry.resolve(4)


# Input from outside (model names, alias files) on a small registry of fake models.

@pytest.fixture
def small_registry(tmp_path):
  """Versions 1 and 2 of a fake SavedModel (the CLI reads files, it loads no model)."""
  from registry import publishing  # pylint: disable=g-import-not-at-top
  source = tmp_path / 'model'
  (source / 'variables').mkdir(parents=True)
  for name in ('saved_model.pb', 'variables/variables.index'):
    (source / name).write_bytes(b'x')
  root = str(tmp_path / 'registry')
  for _ in range(2):
    publishing.publish(str(source), root, MODEL, ['a', 'b'], {})
  return root


@pytest.mark.parametrize('model', ['..', '../..', '.', 'a/../b', '.hidden'])
def test_cli_refuses_model_names_outside_the_registry(small_registry, tmp_path, model,
                                                      capsys):
  code, out, err = _cli(capsys, 'list', '--registry', small_registry, '--model', model,
                        '--metadata', str(tmp_path / 'none.sqlite'))
  assert (code, out) == (2, '')
  assert err.startswith(f'error: Invalid model name {model!r}') and len(
      err.strip().splitlines()) == 1, err


@pytest.mark.parametrize('version, message', [
    ('"../1"', "is invalid: its version '../1' is not a version number"),
    ('true', 'is invalid: its version True is not a version number'),
    ('null', 'is invalid: its version None is not a version number'),
    ('7', 'No version 7 of'),
])
def test_hand_edited_alias_files_are_clear_errors(small_registry, tmp_path, version,
                                                   message, capsys):
  aliases = os.path.join(small_registry, MODEL, 'aliases')
  os.makedirs(aliases)
  with open(os.path.join(aliases, 'production.json'), 'w', encoding='utf-8') as f:
    f.write('{"version": %s, "history": []}' % version)
  where = ('--registry', small_registry, '--metadata', str(tmp_path / 'none.sqlite'))
  for argv in (('show', 'production'), ('promote', 'staging', 'production', '--reason', 'r')):
    code, out, err = _cli(capsys, *argv, *where)
    assert (code, out) == (2, ''), argv
    assert err.startswith('error: ') and message in err, (argv, err)
    assert len(err.strip().splitlines()) == 1, err
  assert not os.path.exists(os.path.join(aliases, 'staging.json'))


def test_non_ascii_digits_are_not_versions(small_registry, tmp_path, capsys):
  os.makedirs(os.path.join(small_registry, MODEL, '²'))
  registry = Registry(small_registry, MODEL)
  assert registry.version_numbers() == [1, 2]
  assert registry.latest().version == 2
  code, _, err = _cli(capsys, 'show', '²', '--registry', small_registry,
                      '--metadata', str(tmp_path / 'none.sqlite'))
  assert code == 2 and err.startswith("error: Invalid alias '²'"), err


def test_fingerprint_counts_the_files_of_every_split():
  # ImageExampleGen's fingerprint: one line per labeled split, one for the
  # unlabeled folder; `registry list` shows their total.
  from registry import cli as registry_lib  # pylint: disable=g-import-not-at-top
  fingerprint = ('split:all,num_files:400,total_bytes:9,sha256:ab\n'
                 'split:unlabeled,num_files:200,total_bytes:3,sha256:cd')
  assert registry_lib.fingerprint_short(fingerprint).startswith('600 files/')
  assert registry_lib.fingerprint_short('') == '-'


# Commands that need no TensorFlow start in a fraction of a second and print
# none of its start-up lines.

# Run in a fresh process: main(argv), then the heavy packages it imported.
_HEAVY_IMPORTS = '''
import sys
from pipeline import __main__ as cli
status = cli.main(sys.argv[1:])
heavy = {'tensorflow', 'tfx', 'apache_beam', 'tf_keras', 'keras'}
print('heavy imports:', sorted(heavy & {name.split('.')[0] for name in sys.modules}),
      file=sys.stderr)
sys.exit(status)
'''


@pytest.fixture
def light_inputs(small_registry, tmp_path):
  """The small registry with a version whose lineage is in a TFX-shaped
  store, a `production` alias, and an image folder for `schema`."""
  from registry import layout  # pylint: disable=g-import-not-at-top
  from registry import publishing  # pylint: disable=g-import-not-at-top
  metadata = str(tmp_path / 'metadata.sqlite')
  _fake_tfx_store(metadata)
  publishing.publish(str(tmp_path / 'model'), small_registry, MODEL, ['a', 'b'],
                     {layout.MODEL_URI_KEY: '/model', 'pipeline_run_id': 'run1'})
  Registry(small_registry, MODEL).promote('production', '3', 'test', 'me')
  for name in ('cat', 'dog'):
    (tmp_path / 'images' / name).mkdir(parents=True)
    (tmp_path / 'images' / name / 'a.png').write_bytes(b'')
  return ['--registry', small_registry, '--metadata', metadata], str(tmp_path / 'images')


@pytest.mark.parametrize('command', [
    ['list'], ['show', 'production'], ['latest'], ['aliases'], ['history', 'production'],
    ['serving-config'], ['schema']])
def test_commands_that_need_no_tensorflow_never_import_it(light_inputs, command):
  registry_args, images = light_inputs
  argv = (['schema', '--data', images] if command == ['schema'] else
          ['registry', *command, *registry_args])
  done = subprocess.run([sys.executable, '-c', _HEAVY_IMPORTS, *argv], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout and done.stderr.splitlines() == ['heavy imports: []'], done.stderr
