"""The versioned registry: growing integer versions, atomic publication."""

import multiprocessing
import os
import shutil
import threading

import pytest
import tensorflow as tf

from components.registry_pusher import registry


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
  assert registry.versions(registry_dir, 'm') == []
  for expected in (1, 2, 3):
    assert registry.publish(saved_model, registry_dir, 'm', ['a', 'b'],
                            {'accuracy': 0.9}) == expected
  assert registry.versions(registry_dir, 'm') == [1, 2, 3]
  newest = registry.version_dir(registry_dir, 'm')
  assert newest.endswith(os.path.join('m', '3'))
  assert registry.read_labels(newest) == ['a', 'b']
  assert registry.read_record(newest) == {'accuracy': 0.9, 'version': 3}
  loaded = tf.saved_model.load(newest)
  assert float(loaded(tf.constant([3.0]))[0]) == 6.0
  assert sorted(os.listdir(os.path.join(registry_dir, 'm'))) == ['1', '2', '3']


def test_reader_never_sees_a_partial_version(saved_model, tmp_path):
  registry_dir = str(tmp_path)
  incomplete, done = [], threading.Event()

  def watch():
    while not done.is_set():
      for version in registry.versions(registry_dir, 'm'):
        path = registry.version_dir(registry_dir, 'm', version)
        needed = ['saved_model.pb', registry.LABELS_FILE, registry.RECORD_FILE,
                  os.path.join('assets', 'padding.bin')]
        if not all(os.path.exists(os.path.join(path, n)) for n in needed) or (
            os.path.getsize(os.path.join(path, 'assets', 'padding.bin')) != 8 << 20):
          incomplete.append(version)

  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    for _ in range(5):
      registry.publish(saved_model, registry_dir, 'm', ['a'], {})
  finally:
    done.set()
    watcher.join()
  assert incomplete == []
  assert registry.versions(registry_dir, 'm') == [1, 2, 3, 4, 5]


def test_failed_publish_leaves_nothing_behind(saved_model, tmp_path):
  registry_dir = str(tmp_path / 'registry')
  with pytest.raises(FileNotFoundError, match='No SavedModel'):
    registry.publish(str(tmp_path / 'missing'), registry_dir, 'm', ['a'], {})
  assert registry.versions(registry_dir, 'm') == []
  # A copy that fails halfway (an unreadable file) leaves no staging folder.
  broken = tmp_path / 'broken'
  shutil.copytree(saved_model, broken)
  os.symlink(tmp_path / 'nowhere', broken / 'variables' / 'zz-dangling')
  with pytest.raises(tf.errors.NotFoundError):
    registry.publish(str(broken), registry_dir, 'm', ['a'], {})
  assert os.listdir(os.path.join(registry_dir, 'm')) == []


def test_concurrent_publishers_get_distinct_versions(saved_model, tmp_path):
  args = (saved_model, str(tmp_path), 'm', ['a'], {})
  with multiprocessing.get_context('spawn').Pool(4) as pool:
    published = pool.starmap(registry.publish, [args] * 4)
  assert sorted(published) == [1, 2, 3, 4]
  for version in published:
    record = registry.read_record(registry.version_dir(str(tmp_path), 'm', version))
    assert record['version'] == version


def test_object_store_registry_through_gfile(saved_model):
  """TF's in-memory filesystem stands in for gs:// (same tf.io.gfile calls,
  no folder rename)."""
  registry_dir = 'ram://registry'
  assert registry.publish(saved_model, registry_dir, 'm', ['a', 'b'], {'k': 1}) == 1
  assert registry.publish(saved_model, registry_dir, 'm', ['a', 'b'], {'k': 2}) == 2
  assert registry.versions(registry_dir, 'm') == [1, 2]
  newest = registry.version_dir(registry_dir, 'm')
  assert registry.read_record(newest) == {'k': 2, 'version': 2}
  assert registry.read_labels(newest) == ['a', 'b']
  assert tf.io.gfile.exists(os.path.join(newest, 'saved_model.pb'))
  assert tf.io.gfile.exists(os.path.join(newest, 'assets', 'padding.bin'))
