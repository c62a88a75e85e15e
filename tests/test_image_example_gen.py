"""ImageExampleGen, run as a real TFX component (LocalDagRunner, Beam, SQLite MLMD)."""

import collections
import glob
import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx import v1 as tfx
from tfx.components.example_gen import utils as example_gen_utils

from components import contracts
from components import example_splits
from components.contracts import UNLABELED_LABEL, UNLABELED_SPLIT
from components.image_example_gen import component, executor
from components.image_example_gen.component import ImageExampleGen, has_fixed_split
from pipeline import metadata

from helpers import copy_sample


def _encode(image: Image.Image, image_format: str) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format)
  return buffer.getvalue()


def _random_image(rng, size, mode):
  channels = {'L': 1, 'RGB': 3, 'RGBA': 4}[mode]
  pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
  return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def _write(path, data: bytes):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


@pytest.fixture
def mixed_folder(tmp_path):
  """Three classes of mixed formats, sizes and channel counts, plus bad files."""
  rng = np.random.default_rng(0)
  root = tmp_path / 'images'
  kinds = [('PNG', 'RGB', (40, 30)), ('JPEG', 'RGB', (64, 64)),
           ('GIF', 'L', (20, 50)), ('BMP', 'RGB', (33, 17)),
           ('PNG', 'RGBA', (48, 48)), ('PNG', 'L', (28, 28))]
  good = {}
  for label in ('cat', 'dog', 'fish'):
    for i in range(6):
      image_format, mode, size = kinds[i]
      image = _random_image(rng, size, mode)
      if image_format == 'JPEG':
        image = image.convert('RGB')
      path = root / label / f'{label} {i}.{image_format.lower()}'
      data = _encode(image, image_format)
      _write(path, data)
      good[f'{label}/{path.name}'] = data
  # The same picture twice in one class: must never straddle the splits.
  _write(root / 'dog' / 'nested' / 'copy.png', good['dog/dog 0.png'])
  good['dog/nested/copy.png'] = good['dog/dog 0.png']
  bad = {
      'cat/corrupt.jpg': good['cat/cat 1.jpeg'][:100],
      'cat/empty.png': b'',
      'dog/notes.jpg': b'this is text, not a picture',
      'fish/.DS_Store': b'\x00\x00\x00\x01Bud1',
      'stray.png': good['fish/fish 0.png'],
  }
  for relative, data in bad.items():
    _write(root / relative, data)
  return str(root), good, bad


def _examples_artifacts(work_dir):
  store = metadata.open_store(os.path.join(work_dir, 'metadata.sqlite'))
  return store.get_artifacts_by_type('Examples')


def _run_example_gen(data_dir, work_dir, eval_fraction=0.25, unlabeled_dir='',
                     enable_cache=False):
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='example-gen-test',
      pipeline_root=os.path.join(work_dir, 'root'),
      components=[ImageExampleGen(data_dir, eval_fraction,
                                  fixed_split=has_fixed_split(data_dir),
                                  unlabeled_dir=unlabeled_dir)],
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              os.path.join(work_dir, 'metadata.sqlite'))),
      enable_cache=enable_cache))
  return _examples_artifacts(work_dir)[-1]


def _read_split(uri, split):
  files = example_splits.split_files(uri, split)
  records = []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    features = example.features.feature
    records.append({
        name: (features[name].int64_list.value[0]
               if features[name].int64_list.value else
               features[name].bytes_list.value[0])
        for name in features
    })
  return records


def test_ingests_mixed_images_and_quarantines_the_rest(mixed_folder, tmp_path):
  data_dir, good, bad = mixed_folder
  artifact = _run_example_gen(data_dir, str(tmp_path / 'work'))

  splits = {split: _read_split(artifact.uri, split) for split in ('train', 'eval')}
  ingested = {r['source_path'].decode(): r for rs in splits.values() for r in rs}
  with open(os.path.join(artifact.uri, contracts.QUARANTINE_FILE)) as f:
    quarantined = {row['path']: row['reason'] for row in map(json.loads, f)}

  # Every file is accounted for, exactly once.
  assert set(ingested) == set(good)
  assert set(quarantined) == set(bad)
  assert len(ingested) + len(quarantined) == len(good) + len(bad)
  assert artifact.custom_properties[
      contracts.QUARANTINED_COUNT_PROPERTY].int_value == len(bad)
  assert 'empty' in quarantined['cat/empty.png']
  assert 'undecodable' in quarantined['cat/corrupt.jpg']
  assert 'not a supported image format' in quarantined['dog/notes.jpg']
  assert 'hidden' in quarantined['fish/.DS_Store']
  assert 'class folder' in quarantined['stray.png']

  for path, record in ingested.items():
    assert record['image'] == good[path]                 # original bytes
    assert record['image_id'].decode() == hashlib.sha256(good[path]).hexdigest()
    assert record['label'].decode() == path.split('/')[0]
    decoded = Image.open(io.BytesIO(good[path]))
    assert (record['width'], record['height']) == decoded.size
  assert ingested['cat/cat 1.jpeg']['format'] == b'jpeg'
  assert ingested['fish/fish 2.gif']['format'] == b'gif'

  # Stratified: every class is in both splits; duplicates stay together.
  for split, records in splits.items():
    assert {r['label'] for r in records} == {b'cat', b'dog', b'fish'}, split
  split_of = {p: s for s, rs in splits.items() for p in
              (r['source_path'].decode() for r in rs)}
  assert split_of['dog/nested/copy.png'] == split_of['dog/dog 0.png']


def _read_then_write(path, root, change=None):
  """Ingest's two reads of one file, in process: what `_ReadImage` describes,
  then (after `change(path)`) what `_WriteExample` emits for it."""
  [description] = executor._ReadImage(root, root).process(  # pylint: disable=protected-access
      os.fsencode(path))
  if change:
    change(path)
  return list(executor._WriteExample().process(description))  # pylint: disable=protected-access


def test_the_bytes_written_are_the_bytes_judged_or_the_file_is_quarantined(tmp_path):
  """The split and the conflict check are decided on a description of each
  image (no bytes are held); the example is written from a second read,
  which must hash to what was judged."""
  rng = np.random.default_rng(1)
  first, second = (_encode(_random_image(rng, (16, 12), 'RGB'), 'PNG')
                   for _ in range(2))
  path = str(tmp_path / 'cat' / 'a.png')
  _write(path, first)

  [serialized] = _read_then_write(path, str(tmp_path))
  features = tf.train.Example.FromString(serialized).features.feature
  assert features['image'].bytes_list.value == [first]
  assert features['image_id'].bytes_list.value == [
      hashlib.sha256(first).hexdigest().encode()]
  assert set(features) == {'image', 'label', 'image_id', 'source_path', 'height',
                           'width', 'format'}

  for change, reason in ((lambda p: _write(p, second), 'its content differs'),
                         (os.remove, 'unreadable on the second read')):
    _write(path, first)
    [quarantined] = _read_then_write(path, str(tmp_path), change)
    assert quarantined.tag == 'quarantined'
    assert quarantined.value['path'] == 'cat/a.png'
    assert quarantined.value['reason'].startswith(
        f'changed while being ingested: {reason}'), quarantined.value


def test_split_is_deterministic_and_follows_eval_fraction(tmp_path):
  data_dir = copy_sample(str(tmp_path / 'images'), ['bag', 'trouser'], 20)
  runs = []
  for attempt in range(2):
    artifact = _run_example_gen(data_dir, str(tmp_path / f'work{attempt}'),
                                eval_fraction=0.2)
    runs.append({split: sorted(r['source_path'] for r in
                               _read_split(artifact.uri, split))
                 for split in ('train', 'eval')})
  assert runs[0] == runs[1]
  counts = collections.Counter(p.split(b'/')[0] for p in runs[0]['eval'])
  assert counts == {b'bag': 4, b'trouser': 4}


def test_fixed_train_eval_layout_is_kept(tmp_path):
  root = tmp_path / 'images'
  copy_sample(str(root / 'train'), ['bag', 'trouser'], 5)
  copy_sample(str(root / 'eval'), ['bag', 'trouser'], 2)
  artifact = _run_example_gen(str(root), str(tmp_path / 'work'))
  for split, count in (('train', 10), ('eval', 4)):
    records = _read_split(artifact.uri, split)
    assert len(records) == count
    assert all(r['source_path'].startswith(split.encode() + b'/') for r in records)
    assert {r['label'] for r in records} == {b'bag', b'trouser'}


@pytest.mark.parametrize('count, weights, expected', [
    (10, [80, 20], [8, 2]),
    (2, [95, 5], [1, 1]),      # every split gets one while there are enough
    (1, [80, 20], [1, 0]),
    (7, [1, 1, 1], [3, 2, 2]),
])
def test_allocation_is_proportional_with_one_per_split(count, weights, expected):
  assert executor._allocate(count, weights) == expected  # pylint: disable=protected-access


@pytest.fixture
def unlabeled_folder(tmp_path):
  """Labeled bag/trouser images and a folder of unlabeled ones: two at its
  top, one nested, one the copy of a labeled image, one corrupt, one hidden,
  one whose name is not UTF-8 (quarantined under its name with \\xNN)."""
  labeled = copy_sample(str(tmp_path / 'images'), ['bag', 'trouser'], 5)
  pool = copy_sample(str(tmp_path / 'pool_source'), ['sneaker'], 3)
  root = tmp_path / 'unlabeled'
  sneakers = sorted(glob.glob(os.path.join(pool, 'sneaker', '*.png')))
  files = {'a.png': sneakers[0], 'b.png': sneakers[1], 'batch 2/c.png': sneakers[2],
           'labeled_copy.png': sorted(glob.glob(os.path.join(labeled, 'bag', '*')))[0]}
  for relative, source in files.items():
    with open(source, 'rb') as f:
      _write(root / relative, f.read())
  bad = {'batch 2/corrupt.png': b'\x89PNG\r\n\x1a\n' + b'\x00' * 20,
         '.thumbs.png': b'hidden'}
  for relative, data in bad.items():
    _write(root / relative, data)
  with open(sneakers[0], 'rb') as f:
    _write(os.fsdecode(bytes(root / 'caf') + b'\xe9.png'), f.read())
  return labeled, str(root), set(files), {str(root / relative) for relative in bad
                                          } | {str(root / 'caf\\xe9.png')}


def _to_fixed_layout(labeled):
  """Moves the class folders of `labeled` under train/, copies one image of
  each to eval/."""
  classes = os.listdir(labeled)
  os.makedirs(os.path.join(labeled, 'train'))
  for name in classes:
    os.rename(os.path.join(labeled, name), os.path.join(labeled, 'train', name))
    first = sorted(os.listdir(os.path.join(labeled, 'train', name)))[0]
    with open(os.path.join(labeled, 'train', name, first), 'rb') as f:
      _write(os.path.join(labeled, 'eval', name, first), f.read())


@pytest.mark.parametrize('fixed', [False, True], ids=['stratified', 'fixed_split'])
def test_unlabeled_folder_becomes_the_unlabeled_split(unlabeled_folder, tmp_path, fixed):
  labeled, unlabeled, good, bad = unlabeled_folder
  if fixed:
    _to_fixed_layout(labeled)
  artifact = _run_example_gen(labeled, str(tmp_path / 'work'), unlabeled_dir=unlabeled)

  assert json.loads(artifact.properties['split_names'].string_value) == [
      'train', 'eval', UNLABELED_SPLIT]
  records = _read_split(artifact.uri, UNLABELED_SPLIT)
  assert {r['source_path'].decode() for r in records} == good
  assert {r['label'] for r in records} == {UNLABELED_LABEL.encode()}
  assert all(r['format'] == b'png' and r['height'] == 28 for r in records)
  labeled_count = sum(len(_read_split(artifact.uri, split)) for split in ('train', 'eval'))
  assert labeled_count == (12 if fixed else 10)

  with open(os.path.join(artifact.uri, contracts.QUARANTINE_FILE)) as f:
    quarantined = {row['path']: row['reason'] for row in map(json.loads, f)}
  assert set(quarantined) == bad          # full paths: clearly the unlabeled folder's
  assert 'undecodable png' in quarantined[os.path.join(unlabeled, 'batch 2', 'corrupt.png')]
  assert 'hidden' in quarantined[os.path.join(unlabeled, '.thumbs.png')]
  assert quarantined[os.path.join(unlabeled, 'caf\\xe9.png')] == (
      'file name is not valid UTF-8')
  properties = artifact.custom_properties
  assert properties[contracts.UNLABELED_COUNT_PROPERTY].int_value == len(good)
  assert properties[contracts.QUARANTINED_COUNT_PROPERTY].int_value == len(bad)
  # A labeled image's copy among the unlabeled ones is no label conflict.
  assert properties[contracts.LABEL_CONFLICT_COUNT_PROPERTY].int_value == 0


def test_a_file_added_to_the_unlabeled_folder_invalidates_the_cache(
    unlabeled_folder, tmp_path):
  labeled, unlabeled, good, _ = unlabeled_folder
  work = str(tmp_path / 'work')
  first = _run_example_gen(labeled, work, unlabeled_dir=unlabeled, enable_cache=True)
  _run_example_gen(labeled, work, unlabeled_dir=unlabeled, enable_cache=True)
  assert len(_examples_artifacts(work)) == 1            # unchanged: from the cache
  with open(os.path.join(unlabeled, 'a.png'), 'rb') as f:
    _write(os.path.join(unlabeled, 'deep', 'er', 'new.png'), f.read())
  second = _run_example_gen(labeled, work, unlabeled_dir=unlabeled, enable_cache=True)

  assert second.id != first.id
  fingerprint = lambda artifact: artifact.custom_properties[
      example_gen_utils.FINGERPRINT_PROPERTY_NAME].string_value
  assert f'\nsplit:{UNLABELED_SPLIT},num_files:7,' in fingerprint(first)
  assert f'\nsplit:{UNLABELED_SPLIT},num_files:8,' in fingerprint(second)
  assert second.custom_properties[
      contracts.UNLABELED_COUNT_PROPERTY].int_value == len(good) + 1


def test_a_relabel_runs_example_gen_again_with_the_new_label(tmp_path):
  """Moving an image to another class folder (the usual fix of a wrong label)
  keeps its size and mtime; the cache must not serve the old label."""
  data_dir = copy_sample(str(tmp_path / 'images'), ['bag', 'trouser'], 5)
  work = str(tmp_path / 'work')
  first = _run_example_gen(data_dir, work, enable_cache=True)
  moved = sorted(os.listdir(os.path.join(data_dir, 'bag')))[0]
  os.rename(os.path.join(data_dir, 'bag', moved),
            os.path.join(data_dir, 'trouser', moved))
  second = _run_example_gen(data_dir, work, enable_cache=True)

  assert second.id != first.id                   # ran again, not CACHED
  labels = {r['source_path'].decode(): r['label'].decode()
            for split in ('train', 'eval') for r in _read_split(second.uri, split)}
  assert labels[f'trouser/{moved}'] == 'trouser'
  assert f'bag/{moved}' not in labels and len(labels) == 10


def _driver_fingerprint(data_dir, unlabeled_dir):
  """The input fingerprint ImageExampleGen's driver resolves, without a run."""
  example_gen = ImageExampleGen(data_dir, 0.25, fixed_split=has_fixed_split(data_dir),
                                unlabeled_dir=unlabeled_dir)
  driver = component._Driver(None)  # pylint: disable=protected-access
  return driver.resolve_exec_properties(dict(example_gen.exec_properties), None, None)[
      example_gen_utils.FINGERPRINT_PROPERTY_NAME]


@pytest.mark.parametrize('folder', ['labeled', 'unlabeled'])
def test_every_change_to_what_ingest_reads_changes_the_fingerprint(
    unlabeled_folder, folder):
  """At any depth, to the nanosecond, by name; and stat'ing a FIFO, a broken
  symlink or a name that is not UTF-8 neither blocks nor fails."""
  labeled, unlabeled, _, _ = unlabeled_folder
  root = labeled if folder == 'labeled' else unlabeled
  nested = os.path.join(root, 'bag', 'deep', 'er', 'n.png')
  with open(glob.glob(os.path.join(labeled, 'bag', '*.png'))[0], 'rb') as f:
    _write(nested, f.read())
  prints = [_driver_fingerprint(labeled, unlabeled)]

  def changed():
    prints.append(_driver_fingerprint(labeled, unlabeled))
    return prints[-1] != prints[-2]

  info = os.stat(nested)
  os.utime(nested, ns=(info.st_atime_ns, info.st_mtime_ns + 1000))
  assert changed()                               # touched, same second, nested
  moved = os.path.join(root, 'trouser', 'deep', 'n.png')
  os.renames(nested, moved)                      # relabeled: same size and mtime
  assert os.stat(moved).st_mtime_ns == info.st_mtime_ns + 1000
  assert changed()
  os.mkfifo(os.path.join(root, 'trouser', 'pipe.png'))
  assert changed()
  os.symlink('missing.png', os.path.join(root, 'trouser', 'broken.png'))
  assert changed()
  _write(os.fsdecode(os.fsencode(os.path.join(root, 'trouser', 'caf')) + b'\xe9.png'),
         b'x')
  assert changed()
  assert _driver_fingerprint(labeled, unlabeled) == prints[-1]   # deterministic
  split = 'all' if folder == 'labeled' else UNLABELED_SPLIT
  assert f'split:{split},num_files:' in prints[-1]
