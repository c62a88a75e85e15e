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
import ml_metadata as mlmd

from components.image_example_gen import executor
from components.image_example_gen.component import ImageExampleGen, has_fixed_split


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


def _run_example_gen(data_dir, work_dir, eval_fraction=0.25):
  metadata_path = os.path.join(work_dir, 'metadata.sqlite')
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='example-gen-test',
      pipeline_root=os.path.join(work_dir, 'root'),
      components=[ImageExampleGen(data_dir, eval_fraction,
                                  fixed_split=has_fixed_split(data_dir))],
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              metadata_path)),
      enable_cache=False))
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      metadata_path)
  store = mlmd.MetadataStore(connection)
  return store.get_artifacts_by_type('Examples')[-1]


def _read_split(uri, split):
  files = glob.glob(os.path.join(uri, f'Split-{split}', '*'))
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
  with open(os.path.join(artifact.uri, executor.QUARANTINE_FILE)) as f:
    quarantined = {row['path']: row['reason'] for row in map(json.loads, f)}

  # Every file is accounted for, exactly once.
  assert set(ingested) == set(good)
  assert set(quarantined) == set(bad)
  assert len(ingested) + len(quarantined) == len(good) + len(bad)
  assert artifact.custom_properties[
      executor.QUARANTINED_COUNT_PROPERTY].int_value == len(bad)
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


def test_split_is_deterministic_and_follows_eval_fraction(sample_copy, tmp_path):
  data_dir = sample_copy(str(tmp_path / 'images'), ['bag', 'trouser'], 20)
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


def test_fixed_train_eval_layout_is_kept(sample_copy, tmp_path):
  root = tmp_path / 'images'
  sample_copy(str(root / 'train'), ['bag', 'trouser'], 5)
  sample_copy(str(root / 'eval'), ['bag', 'trouser'], 2)
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
