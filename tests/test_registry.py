"""The versioned registry: growing integer versions, atomic publication."""

import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid

import pytest
import tensorflow as tf

from registry import Registry
from registry import layout
from registry import publishing


@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
  """A small real SavedModel, padded with a large asset so copies take a while."""
  module = tf.Module()
  module.scale = tf.Variable(2.0)
  module.__call__ = tf.function(
      lambda x: x * module.scale, input_signature=[tf.TensorSpec([None], tf.float32)])
  path = str(tmp_path_factory.mktemp('model'))
  tf.saved_model.save(module, path)
  with open(os.path.join(path, 'assets', 'padding.bin'), 'wb') as f:
    f.write(os.urandom(8 << 20))
  return path


def test_versions_grow_and_carry_labels_and_record(saved_model, tmp_path):
  registry_dir = str(tmp_path)
  assert layout.versions(registry_dir, 'm') == []
  for expected in (1, 2, 3):
    assert publishing.publish(saved_model, registry_dir, 'm', ['a', 'b'],
                            {'accuracy': 0.9}) == expected
  assert layout.versions(registry_dir, 'm') == [1, 2, 3]
  newest = layout.version_dir(registry_dir, 'm')
  assert newest.endswith(os.path.join('m', '3'))
  assert layout.read_labels(newest) == ['a', 'b']
  assert layout.read_record(newest) == {'accuracy': 0.9, 'version': 3}
  loaded = tf.saved_model.load(newest)
  assert float(loaded(tf.constant([3.0]))[0]) == 6.0
  assert sorted(os.listdir(os.path.join(registry_dir, 'm'))) == ['1', '2', '3']


def test_reader_never_sees_a_partial_version(saved_model, tmp_path):
  registry_dir = str(tmp_path)
  model_dir = os.path.join(registry_dir, 'm')
  incomplete, in_progress, errors, done = [], [], [], threading.Event()

  def watch():
    try:
      while not done.is_set():
        if any(name.startswith('.staging-') for name in layout.listdir(model_dir)):
          in_progress.append(layout.versions(registry_dir, 'm'))
        for version in layout.versions(registry_dir, 'm'):
          path = layout.version_dir(registry_dir, 'm', version)
          needed = ['saved_model.pb', layout.LABELS_FILE, layout.RECORD_FILE,
                    layout.PUBLISHED_FILE, os.path.join('assets', 'padding.bin')]
          if not all(os.path.exists(os.path.join(path, n)) for n in needed) or (
              os.path.getsize(os.path.join(path, 'assets', 'padding.bin')) != 8 << 20):
            incomplete.append(version)
    except Exception as error:  # pylint: disable=broad-except
      errors.append(error)       # reported by the test, not as a thread warning

  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    for _ in range(5):
      publishing.publish(saved_model, registry_dir, 'm', ['a'], {})
  finally:
    done.set()
    watcher.join()
  assert errors == []
  assert in_progress, 'the watcher never polled while a publish was in progress'
  assert incomplete == []
  assert layout.versions(registry_dir, 'm') == [1, 2, 3, 4, 5]


def test_failed_publish_leaves_nothing_behind(saved_model, tmp_path):
  registry_dir = str(tmp_path / 'registry')
  with pytest.raises(FileNotFoundError, match='No SavedModel'):
    publishing.publish(str(tmp_path / 'missing'), registry_dir, 'm', ['a'], {})
  assert layout.versions(registry_dir, 'm') == []
  # A copy that fails halfway (an unreadable file) leaves no staging folder.
  broken = tmp_path / 'broken'
  shutil.copytree(saved_model, broken)
  os.symlink(tmp_path / 'nowhere', broken / 'variables' / 'zz-dangling')
  with pytest.raises(FileNotFoundError):
    publishing.publish(str(broken), registry_dir, 'm', ['a'], {})
  assert os.listdir(os.path.join(registry_dir, 'm')) == []


def test_concurrent_publishers_get_distinct_versions(saved_model, tmp_path):
  args = (saved_model, str(tmp_path), 'm', ['a'], {})
  with multiprocessing.get_context('spawn').Pool(4) as pool:
    published = pool.starmap(publishing.publish, [args] * 4)
  assert sorted(published) == [1, 2, 3, 4]
  for version in published:
    record = layout.read_record(layout.version_dir(str(tmp_path), 'm', version))
    assert record['version'] == version


def test_a_local_publish_does_not_import_tensorflow(saved_model, tmp_path):
  """Local publishing uses plain file calls, so a publisher starts in a
  fraction of a second instead of loading TensorFlow."""
  code = ('import sys; from registry import publishing; '
          'print(publishing.publish(sys.argv[1], sys.argv[2], "m", ["a"], {})); '
          'print("tensorflow" in sys.modules)')
  done = subprocess.run([sys.executable, '-c', code, saved_model, str(tmp_path)],
                        capture_output=True, text=True, check=True)
  assert done.stdout.split() == ['1', 'False']
  assert layout.read_labels(layout.version_dir(str(tmp_path), 'm')) == ['a']


def test_object_store_registry_through_gfile(saved_model):
  """TF's in-memory filesystem stands in for gs:// (same tf.io.gfile calls,
  no folder rename)."""
  registry_dir = 'ram://registry'
  assert publishing.publish(saved_model, registry_dir, 'm', ['a', 'b'], {'k': 1}) == 1
  assert publishing.publish(saved_model, registry_dir, 'm', ['a', 'b'], {'k': 2}) == 2
  assert layout.versions(registry_dir, 'm') == [1, 2]
  newest = layout.version_dir(registry_dir, 'm')
  assert layout.read_record(newest) == {'k': 2, 'version': 2}
  assert layout.read_labels(newest) == ['a', 'b']
  assert tf.io.gfile.exists(os.path.join(newest, 'saved_model.pb'))
  assert tf.io.gfile.exists(os.path.join(newest, 'assets', 'padding.bin'))


def _fake_saved_model(path):
  """A folder with a SavedModel's file layout (publishing copies files; it
  does not load them)."""
  files = ['saved_model.pb', 'fingerprint.pb', 'variables/variables.index',
           'variables/variables.data-00000-of-00001', 'assets/vocab.txt']
  for relative in files:
    os.makedirs(os.path.dirname(os.path.join(path, relative)), exist_ok=True)
    with open(os.path.join(path, relative), 'wb') as f:
      f.write(os.urandom(100))
  return str(path)


def test_versions_are_ascii_digit_folders(tmp_path):
  model_dir = tmp_path / 'm'
  for name in ('1', '²', '٣', '02x', '.staging-1', 'aliases'):
    (model_dir / name).mkdir(parents=True)
  assert layout.versions(str(tmp_path), 'm') == [1]
  assert layout.version_dir(str(tmp_path), 'm') == str(model_dir / '1')
  with pytest.raises(FileNotFoundError, match='No version 2 of'):
    layout.version_dir(str(tmp_path), 'm', 2)


@pytest.mark.parametrize('name', ['..', '.', '../other', 'a/b', '', '.hidden', 'm\n'])
def test_model_names_stay_inside_the_registry(tmp_path, name):
  source = _fake_saved_model(tmp_path / 'model')
  with pytest.raises(ValueError, match='Invalid model name'):
    publishing.publish(source, str(tmp_path / 'registry'), name, ['a'], {})
  with pytest.raises(ValueError, match='Invalid model name'):
    layout.versions(str(tmp_path / 'registry'), name)
  with pytest.raises(ValueError, match='Invalid model name'):
    Registry(str(tmp_path / 'registry'), name)
  assert not (tmp_path / 'other').exists()


class _FakeClaims(publishing.Claims):
  """Create-if-absent under a lock, as Cloud Storage's if_generation_match=0."""

  def __init__(self):
    super().__init__()
    self._lock = threading.Lock()
    self.refused = []

  def claim(self, path):
    with self._lock:
      if tf.io.gfile.exists(path):
        self.refused.append(path)
        return False
      with tf.io.gfile.GFile(path, 'w') as f:
        f.write('')
      return True


@pytest.fixture
def object_store(monkeypatch):
  """TF's in-memory filesystem as an object store: its folder rename is taken
  away (it has one; gs:// has not) and number claims are atomic (_FakeClaims)."""
  def no_rename(*args, **kwargs):
    raise AssertionError(f'object stores have no rename: {args} {kwargs}')
  monkeypatch.setattr(tf.io.gfile, 'rename', no_rename)
  claims = _FakeClaims()
  monkeypatch.setattr(publishing, 'claims_for', lambda registry_dir: claims)
  return f'ram://registry-{uuid.uuid4().hex}', claims


def test_gcs_claims_are_uploads_with_a_generation_match_precondition(monkeypatch):
  """The real client library's API, with the client's transport replaced: the
  claim is an upload that only succeeds if no object exists (generation 0)."""
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  stored, uploads = set(), []

  class FakeBlob:
    def __init__(self, bucket, name):
      self.key = (bucket, name)

    def upload_from_string(self, data, if_generation_match=None):
      uploads.append((self.key, data, if_generation_match))
      if if_generation_match == 0 and self.key in stored:
        raise exceptions.PreconditionFailed('At least one of the pre-conditions failed')
      stored.add(self.key)

  class FakeClient:
    def bucket(self, name):
      return type('FakeBucket', (), {'blob': lambda _, blob: FakeBlob(name, blob)})()
  monkeypatch.setattr(storage, 'Client', FakeClient)
  claims = publishing.claims_for('gs://bucket/registry')
  assert isinstance(claims, publishing.GcsClaims)
  assert claims.claim('gs://bucket/registry/m/1/CLAIM') is True
  assert claims.claim('gs://bucket/registry/m/1/CLAIM') is False
  assert claims.claim('gs://bucket/registry/m/2/CLAIM') is True
  assert uploads == [(('bucket', 'registry/m/1/CLAIM'), b'', 0)] * 2 + [
      (('bucket', 'registry/m/2/CLAIM'), b'', 0)]


def test_object_store_publishers_racing_for_a_number_get_distinct_versions(
    tmp_path, object_store, monkeypatch):
  registry_dir, claims = object_store
  source = _fake_saved_model(tmp_path / 'model')
  model_dir = os.path.join(registry_dir, 'm')
  # Both publishers list the model folder before either claims: both pick 1.
  listdir, listed, barrier = tf.io.gfile.listdir, set(), threading.Barrier(2)

  def listdir_together(path):
    names = listdir(path)
    if path == model_dir and threading.get_ident() not in listed and len(listed) < 2:
      listed.add(threading.get_ident())
      barrier.wait(timeout=30)
    return names
  monkeypatch.setattr(tf.io.gfile, 'listdir', listdir_together)
  results, errors = [], []

  def publish(run):
    try:
      results.append(publishing.publish(source, registry_dir, 'm', ['a'], {'run': run}))
    except Exception as error:  # pylint: disable=broad-except
      errors.append(error)
  publishers = [threading.Thread(target=publish, args=(run,)) for run in ('x', 'y')]
  for thread in publishers:
    thread.start()
  for thread in publishers:
    thread.join()
  assert errors == []
  assert sorted(results) == [1, 2]
  assert claims.refused == [os.path.join(model_dir, '1', layout.CLAIM_FILE)]
  assert layout.versions(registry_dir, 'm') == [1, 2]
  runs = {layout.read_record(layout.version_dir(registry_dir, 'm', v))['run']
          for v in (1, 2)}
  assert runs == {'x', 'y'}


def test_object_store_publish_killed_after_its_record_is_never_read(
    tmp_path, object_store, monkeypatch):
  registry_dir, _ = object_store
  source = _fake_saved_model(tmp_path / 'model')
  assert publishing.publish(source, registry_dir, 'm', ['a'], {'model_artifact_uri': 'u1'}) == 1
  write_record = publishing._write_record  # pylint: disable=protected-access

  def write_then_die(*args):
    write_record(*args)
    raise KeyboardInterrupt('killed after model_record.json')
  monkeypatch.setattr(publishing, '_write_record', write_then_die)
  with pytest.raises(KeyboardInterrupt):
    publishing.publish(source, registry_dir, 'm', ['a'], {'model_artifact_uri': 'u2'})
  monkeypatch.setattr(publishing, '_write_record', write_record)
  unfinished = os.path.join(registry_dir, 'm', '2')
  assert tf.io.gfile.exists(os.path.join(unfinished, layout.RECORD_FILE))
  # Every reader skips it: versions, latest, find_version, the Registry API.
  assert layout.versions(registry_dir, 'm') == [1]
  assert layout.version_dir(registry_dir, 'm').endswith('/m/1')
  assert layout.find_version(registry_dir, 'm', 'u2') is None
  api = Registry(registry_dir, 'm')
  assert api.latest().version == 1
  assert [record['version'] for record in api.versions()] == [1]
  with pytest.raises(FileNotFoundError, match='No version 2 of'):
    api.resolve('2')
  # The rerun publishes a complete version under the next number.
  assert publishing.publish(source, registry_dir, 'm', ['a'], {'model_artifact_uri': 'u2'}) == 3
  assert layout.find_version(registry_dir, 'm', 'u2') == 3
  assert api.latest().version == 3
  assert layout.versions(registry_dir, 'm') == [1, 3]
  newest = layout.version_dir(registry_dir, 'm')
  for relative in ('saved_model.pb', 'variables/variables.index', layout.LABELS_FILE,
                   layout.PUBLISHED_FILE):
    assert tf.io.gfile.exists(os.path.join(newest, relative)), relative


def test_local_publish_fsyncs_every_file_and_folder(tmp_path, monkeypatch):
  source = _fake_saved_model(tmp_path / 'model')
  registry_dir = str(tmp_path / 'registry')
  model_dir = os.path.join(registry_dir, 'm')
  synced, fsync = [], os.fsync

  def recording_fsync(fd):
    path = os.readlink(f'/proc/self/fd/{fd}')
    synced.append((path, os.path.isdir(os.path.join(model_dir, '1'))))
    fsync(fd)
  monkeypatch.setattr(os, 'fsync', recording_fsync)
  assert publishing.publish(source, registry_dir, 'm', ['a'], {}) == 1
  published = os.path.join(model_dir, '1')
  files = sorted(os.path.relpath(os.path.join(d, n), published)
                 for d, _, names in os.walk(published) for n in names)
  folders = sorted(os.path.relpath(d, published) for d, _, _ in os.walk(published))
  staged = {}
  for path, _ in synced:
    inside = re.fullmatch(r'.*/\.staging-[0-9a-f]{32}(/(.*))?', path)
    if inside:
      staged[inside.group(2) or '.'] = path
  assert len(files) == 8 and set(files) <= set(staged), (files, sorted(staged))
  assert set(folders) <= set(staged), (folders, sorted(staged))
  # The marker is synced after everything else, the model folder after the rename.
  before_marker = [p for p, _ in synced][:[p for p, _ in synced].index(
      staged[layout.PUBLISHED_FILE])]
  assert {staged[f] for f in files if f != layout.PUBLISHED_FILE} <= set(before_marker)
  assert synced[-1] == (model_dir, True)
  assert not any(after for _, after in synced[:-1])


def test_cleanup_between_lock_creation_and_lock_does_not_fail_the_publish(
    tmp_path, monkeypatch):
  source = _fake_saved_model(tmp_path / 'model')
  registry_dir = str(tmp_path / 'registry')
  model_dir = os.path.join(registry_dir, 'm')
  flock, interleaved = publishing.fcntl.flock, []

  def cleanup_then_flock(fd, operation):
    # The publisher's blocking lock: a concurrent publish's cleanup runs first.
    if operation == publishing.fcntl.LOCK_EX and not interleaved:
      interleaved.append(sorted(os.listdir(model_dir)))
      publishing._remove_abandoned_staging(model_dir)  # pylint: disable=protected-access
      interleaved.append(sorted(os.listdir(model_dir)))
    return flock(fd, operation)
  monkeypatch.setattr(publishing.fcntl, 'flock', cleanup_then_flock)
  assert publishing.publish(source, registry_dir, 'm', ['a'], {}) == 1
  assert len(interleaved[0]) == 1 and interleaved[0][0].endswith('.lock')
  assert interleaved[1] == []                   # the cleanup took the lock file
  assert sorted(os.listdir(model_dir)) == ['1']
  assert layout.versions(registry_dir, 'm') == [1]
