"""Bad input at ingest: the real ImageExampleGen on a corpus of hostile and odd
files (tests/hostile_corpus.py), the decompression-bomb guard and the EXIF
orientation of the shared decoder (models/image_codec.py)."""

import io
import json
import os
import struct
import subprocess
import sys
import textwrap

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from skimage import data as skimage_data
from tfx import v1 as tfx

import hostile_corpus as corpus
from components import contracts
from components import example_splits
from components.image_example_gen import executor
from components.image_example_gen.component import ImageExampleGen
from models import image_codec
from pipeline import metadata

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_PIXELS = 30_000_000     # below the default: proves the limit reaches the executor
MAX_FILE_BYTES = 16 * 2**20  # likewise (default 64 MB)
# What follow_external_symlinks=false refuses in the corpus: links to files
# outside it, and the files under the class folder that links outside.
EXTERNAL = {'cat/link_to_outside.jpg', 'cat/link_to_huge.jpg', 'dog/null_device.jpg',
            'linked_class/a.png', 'linked_class/sub/b.jpg'}


def _read_examples(uri):
  records = {}
  for split in ('train', 'eval'):
    files = example_splits.split_files(uri, split)
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
      features = tf.train.Example.FromString(record.numpy()).features.feature
      row = {name: (features[name].int64_list.value[0]
                    if features[name].int64_list.value else
                    features[name].bytes_list.value[0]) for name in features}
      records[row['source_path'].decode('utf-8')] = row
  return records


@pytest.fixture(scope='module')
def ingest(tmp_path_factory):
  """The corpus, and what the real component made of it (LocalDagRunner)."""
  work = tmp_path_factory.mktemp('hostile')
  data_dir = str(work / 'images')
  expected = corpus.write_hostile_corpus(data_dir, MAX_FILE_BYTES)
  metadata_path = str(work / 'metadata.sqlite')
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      metadata_path)
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='hostile-ingest-test', pipeline_root=str(work / 'root'),
      components=[ImageExampleGen(data_dir, 0.25, fixed_split=False,
                                  max_image_pixels=MAX_PIXELS,
                                  max_file_bytes=MAX_FILE_BYTES)],
      metadata_connection_config=connection, enable_cache=False))
  artifact = metadata.open_store(metadata_path).get_artifacts_by_type('Examples')[-1]
  with open(os.path.join(artifact.uri, contracts.QUARANTINE_FILE), encoding='utf-8') as f:
    quarantined = [json.loads(line) for line in f if line.strip()]
  return {'data_dir': data_dir, 'expected': expected, 'artifact': artifact,
          'ingested': _read_examples(artifact.uri),
          'quarantined': {row['path']: row['reason'] for row in quarantined},
          'quarantine_rows': len(quarantined)}


def _count_in(root):
  """Entries a user sees, counted without the executor's walker: every
  non-folder entry and every folder symlink of the tree walked without
  following links, plus what lies under the one followed folder symlink
  (`linked_class`, whose target is outside the data folder)."""
  count = 0
  for directory, folders, files in os.walk(root):      # followlinks=False
    count += len(files)
    count += sum(os.path.islink(os.path.join(directory, f)) for f in folders)
  target = os.path.join(root, 'linked_class')
  for directory, folders, files in os.walk(os.path.realpath(target)):
    count += len(files)
    count += sum(os.path.islink(os.path.join(directory, f)) for f in folders)
  return count - 1    # `linked_class` itself is a folder (followed), not an entry


def test_every_file_is_ingested_or_quarantined_with_its_reason(ingest):
  expected, ingested, quarantined = (
      ingest['expected'], ingest['ingested'], ingest['quarantined'])
  count_in = _count_in(ingest['data_dir'])

  # Count in = ingested + quarantined, each entry exactly once.
  assert count_in == len(expected) == len(executor.list_files(ingest['data_dir']))
  assert len(ingested) + ingest['quarantine_rows'] == count_in
  assert not set(ingested) & set(quarantined)
  assert set(ingested) | set(quarantined) == set(expected)
  assert ingest['artifact'].custom_properties[
      contracts.QUARANTINED_COUNT_PROPERTY].int_value == len(quarantined)

  for path, outcome in expected.items():
    if outcome['outcome'] == corpus.INGESTED:
      assert path in ingested, (path, quarantined.get(path))
      record = ingested[path]
      assert record['label'].decode() == outcome['label'], path
      assert (record['height'], record['width']) == (
          outcome['height'], outcome['width']), path
    else:
      assert path in quarantined, path
      assert outcome['reason'] in quarantined[path], (path, quarantined[path])
  for path in ('cat/bomb.png', 'cat/bomb.gif', 'dog/bomb.jpg'):
    assert f'max_image_pixels={MAX_PIXELS}' in quarantined[path]
  assert '25000x25000' in quarantined['cat/bomb.png']
  for path in ('dog/huge.png', 'cat/link_to_huge.jpg'):
    assert f'max_file_bytes={MAX_FILE_BYTES}' in quarantined[path]
  assert {r['label'] for r in ingested.values()} == {
      b'cat', b'dog', b'solo', b'linked_class'}      # not the empty class


def _outcomes(read_image, paths):
  """{shown path: 'ingested' or the quarantine reason} of `read_image`
  (executor._ReadImage) run in process on `paths`, no Beam pipeline."""
  outcomes = {}
  for path in paths:
    for output in read_image.process(os.fsencode(path)):
      if isinstance(output, beam.pvalue.TaggedOutput):
        outcomes[output.value['path']] = output.value['reason']
      else:
        outcomes[output['source_path']] = corpus.INGESTED
  return outcomes


def test_external_symlinks_are_refused_when_asked(ingest):
  """follow_external_symlinks=false, on the same corpus: whatever resolves
  outside the data folder is quarantined unopened, everything else keeps the
  outcome of the real run, and count in = ingested + quarantined still."""
  root = ingest['data_dir']
  paths = executor.list_files(root)
  outcomes = _outcomes(executor._ReadImage(  # pylint: disable=protected-access
      root, root, MAX_PIXELS, MAX_FILE_BYTES, follow_external_symlinks=False), paths)

  assert len(outcomes) == len(paths) == len(ingest['expected'])
  refused = {path for path, outcome in outcomes.items()
             if 'outside the data folder' in outcome}
  assert refused == EXTERNAL
  for path, outcome in outcomes.items():
    if path not in EXTERNAL:
      assert outcome == ingest['quarantined'].get(path, corpus.INGESTED), path
  ingested = sum(outcome == corpus.INGESTED for outcome in outcomes.values())
  assert (ingested, len(outcomes) - ingested) == (len(ingest['ingested']) - 3,
                                                   ingest['quarantine_rows'] + 3)


def test_max_file_bytes_is_inclusive(tmp_path):
  png = corpus.encode(Image.new('RGB', (4, 3)), 'PNG')
  path = tmp_path / 'cat' / 'tiny.png'
  path.parent.mkdir()
  path.write_bytes(png)
  read = lambda limit: _outcomes(executor._ReadImage(  # pylint: disable=protected-access
      str(tmp_path), str(tmp_path), max_file_bytes=limit), [str(path)])['cat/tiny.png']
  assert read(len(png)) == corpus.INGESTED
  assert read(len(png) - 1) == (f'too large: {len(png)} bytes, more than '
                                f'data.max_file_bytes={len(png) - 1}; not read')


def test_webp_and_tiff_are_refused_saying_how_to_convert_them(tmp_path):
  """No TF 2.16 op decodes them (tf.io has no decode_webp or decode_tiff)."""
  assert not hasattr(tf.io, 'decode_webp') and not hasattr(tf.io, 'decode_tiff')
  rgb = Image.new('RGB', (4, 3), (200, 30, 90))
  (tmp_path / 'cat').mkdir()
  for name, image_format in (('photo.webp', 'WEBP'), ('scan.tiff', 'TIFF')):
    (tmp_path / 'cat' / name).write_bytes(corpus.encode(rgb, image_format))
  outcomes = _outcomes(executor._ReadImage(  # pylint: disable=protected-access
      str(tmp_path), str(tmp_path)), executor.list_files(str(tmp_path)))
  refused = 'not a supported image format (supported: jpeg, png, gif, bmp); it is '
  assert outcomes == {
      'cat/photo.webp': refused + 'WebP, which TensorFlow 2.16 cannot decode: convert '
      'it to PNG in its folder with ImageMagick, `mogrify -format png *.webp`, and '
      'move the WebP files out',
      'cat/scan.tiff': refused + 'TIFF, which TensorFlow 2.16 cannot decode: convert '
      'it to PNG in its folder with ImageMagick, `mogrify -format png *.tif*`, and '
      'move the TIFF files out'}
  assert image_codec.conversion_hint(b'MM\0*' + bytes(8)).startswith('; it is TIFF')
  assert image_codec.conversion_hint(b'RIFF\0\0\0\0WAVE') == ''


def test_exif_photos_are_stored_upright(ingest):
  upright = skimage_data.chelsea().astype(np.float32)
  for path in ('cat/phone rot6 II.jpg', 'dog/phone_rot8_MM.jpg',
               'dog/phone_rot3_II.jpg'):
    record = ingest['ingested'][path]
    assert (record['height'], record['width']) == upright.shape[:2]
    pixels = image_codec.decode_rgb(record['image']).numpy().astype(np.float32)
    assert np.abs(pixels - upright).mean() < 3, path


def test_every_ingested_example_passes_the_transform(ingest):
  """What ingest accepted never fails later: the real preprocessing_fn
  through TF Transform on Beam, then the serialized transform graph (what
  serving runs), on every ingested image."""
  from helpers import analyze_and_transform  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  rows = [(r['image'], r['label']) for r in ingest['ingested'].values()]
  data, output_dir = analyze_and_transform(
      rows, 32, ['cat', 'dog', 'solo', 'linked_class'])
  assert len(data) == len(rows)
  images = np.stack([row['image_xf'] for row in data])
  assert images.shape == (len(rows), 32, 32, 3) and np.isfinite(images).all()

  layer = tft.TFTransformOutput(output_dir).transform_features_layer()
  served = layer({'image': tf.constant([[image] for image, _ in rows])})
  assert served['image_xf'].shape == (len(rows), 32, 32, 3)
  # The graph carries the bomb guard: a bomb sent to "serving" is refused.
  with pytest.raises(tf.errors.InvalidArgumentError, match='declares 65535x65535'):
    layer({'image': tf.constant([[corpus.gif_bomb()]])})


def test_accepted_formats_decode_to_rgb_of_their_size(ingest):
  """CMYK, gray, gray+alpha, RGBA, 16-bit, palette+tRNS, animated GIF, BMPs:
  uint8 RGB [H, W, 3]; lossless ones match Pillow's RGB rendering."""
  root = ingest['data_dir']
  for path, outcome in ingest['expected'].items():
    if outcome['outcome'] != corpus.INGESTED:
      continue
    with open(os.path.join(root, path), 'rb') as f:
      encoded = f.read()
    image = image_codec.decode_rgb(encoded)
    assert image.dtype == tf.uint8
    assert image.shape == (outcome['height'], outcome['width'], 3), path
    if image_codec.sniff_format(encoded) != 'jpeg' and 'sixteen' not in path:
      reference = Image.open(io.BytesIO(encoded))
      np.testing.assert_array_equal(image.numpy(), np.asarray(reference.convert('RGB')),
                                    err_msg=path)
  with open(os.path.join(root, 'cat/sixteen_bit.png'), 'rb') as f:
    sixteen = image_codec.decode_rgb(f.read()).numpy()
  with open(os.path.join(root, 'cat/gray.png'), 'rb') as f:
    np.testing.assert_array_equal(sixteen, image_codec.decode_rgb(f.read()).numpy())


_BOMB_PROBE = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import hostile_corpus as corpus
    from models import image_codec
    from PIL import Image

    peak_mb, reset_peak = corpus.peak_rss_mb, corpus.reset_peak_rss

    small = corpus.encode(Image.new('RGB', (8, 8)), 'PNG')
    png_bomb, control = corpus.png_bomb(25000, 25000), corpus.png_bomb(6000, 6000)
    bombs = [png_bomb, corpus.gif_bomb(),
             corpus.jpeg_bomb(corpus.encode(Image.new('RGB', (8, 8)), 'JPEG'))]
    image_codec.decode_rgb(small)               # warm up both code paths
    try:
      image_codec.decode_rgb(control, max_pixels=10)
    except tf.errors.InvalidArgumentError:
      pass
    reset_peak()
    before = peak_mb()
    messages = []
    for bomb in bombs:
      try:
        image_codec.decode_rgb(bomb)
        messages.append(None)
      except tf.errors.InvalidArgumentError as error:
        messages.append(error.message)
    refused = peak_mb() - before
    reset_peak()
    before = peak_mb()
    shape = image_codec.decode_rgb(control, max_pixels=10**8).shape.as_list()
    print(json.dumps({'refused_mb': refused, 'control_mb': peak_mb() - before,
                      'control_shape': shape, 'messages': messages}))
''')


def test_bomb_is_refused_before_allocation():
  """In a fresh process (peak RSS is per process): three bombs declaring 625 M
  to 4.3 G pixels are refused with no memory growth, while the same kind of
  file declaring 36 M pixels, allowed by a raised limit, grows it by >100 MB."""
  result = subprocess.run(
      [sys.executable, '-c', _BOMB_PROBE, REPO_ROOT, os.path.dirname(__file__)],
      capture_output=True, text=True, timeout=120, check=True,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  probe = json.loads(result.stdout.strip().splitlines()[-1])
  print('bomb probe:', {k: v for k, v in probe.items() if k != 'messages'})
  assert probe['refused_mb'] < 50, probe
  assert probe['control_mb'] > 100, probe        # the measurement can see a decode
  assert probe['control_shape'] == [6000, 6000, 3]
  png, gif, jpeg = probe['messages']
  assert 'declares 25000x25000 pixels' in png and 'limit of 50000000' in png
  assert 'declares 65535x65535 pixels' in gif
  assert 'declares 60000x60000 pixels' in jpeg


def test_declared_size_reads_headers_and_is_serializable(tmp_path):
  """PNG / GIF / BMP (negative height) / JPEG headers, and the guard survives
  a SavedModel round trip (plain TF ops, no py_function)."""
  rgb = Image.new('RGB', (37, 23))
  cases = {
      corpus.encode(rgb, 'PNG'): [23, 37, 1],
      corpus.encode(rgb, 'GIF'): [23, 37, 1],
      corpus.encode(rgb, 'BMP'): [23, 37, 1],
      corpus.top_down_bmp(rgb): [23, 37, 1],
      corpus.encode(rgb, 'JPEG'): [23, 37, 1],
      corpus.animated_gif(np.random.default_rng(0), (37, 23), frames=4): [23, 37, 4],
      b'': [0, 0, 1], b'GIF8': [0, 0, 1], b'\x89PNG\r\n\x1a\n': [0, 0, 1],
  }
  for encoded, size in cases.items():
    assert image_codec.declared_size(encoded).numpy().tolist() == size, encoded[:12]

  class Decoder(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, encoded):
      return image_codec.decode_and_resize(encoded, 8, max_pixels=1000)

  tf.saved_model.save(Decoder(), str(tmp_path / 'decoder'))
  loaded = tf.saved_model.load(str(tmp_path / 'decoder'))
  assert loaded(tf.constant([corpus.encode(rgb, 'PNG')])).shape == (1, 8, 8, 3)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'declares 40x30 pixels .* limit of 1000'):
    loaded(tf.constant([corpus.encode(Image.new('RGB', (40, 30)), 'PNG')]))


def test_ingest_limits_are_wired_through_the_dag():
  from pipeline import config as config_lib, dag  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(None, ['data.max_image_pixels=1234',
                                         'data.max_file_bytes=5678',
                                         'data.follow_external_symlinks=false'])
  assert dag.components_config(config)['max_image_pixels'] == 1234
  pipeline = dag.create_pipeline(config)
  example_gen = next(c for c in pipeline.components if c.id == 'ImageExampleGen')
  properties = {'custom_config': example_gen.exec_properties['custom_config']}
  assert executor.max_image_pixels(properties) == 1234
  assert executor.max_file_bytes(properties) == 5678
  assert executor.follow_external_symlinks(properties) is False
  assert executor.max_image_pixels({}) == image_codec.DEFAULT_MAX_PIXELS
  defaults = config_lib.DataConfig()
  assert executor.max_file_bytes({}) == defaults.max_file_bytes == 64 * 2**20
  assert executor.follow_external_symlinks({}) is defaults.follow_external_symlinks


# --- EXIF orientation --------------------------------------------------------

@pytest.fixture(scope='module')
def upright():
  """A small, asymmetric photo (no orientation is a no-op on it)."""
  return np.asarray(Image.fromarray(skimage_data.chelsea()).resize((72, 48)))


def _quality_jpeg(array):
  return corpus.encode(Image.fromarray(np.ascontiguousarray(array)), 'JPEG',
                       quality=100, subsampling=0)


@pytest.mark.parametrize('byte_order', [b'II', b'MM'])
@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_matches_pil(upright, orientation, byte_order):
  stored = np.ascontiguousarray(corpus.STORE_FOR_ORIENTATION[orientation](upright))
  encoded = corpus.with_app1(_quality_jpeg(stored),
                             corpus.exif_app1(orientation, byte_order))
  pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encoded))).convert('RGB'))
  assert int(image_codec.exif_orientation(encoded)) == orientation
  ours = image_codec.decode_rgb(encoded).numpy()
  assert ours.shape == pil.shape == upright.shape
  assert np.abs(ours.astype(float) - pil).mean() < 2
  assert np.abs(ours.astype(float) - upright).mean() < 2


def test_exif_orientation_in_a_graph_over_a_batch(upright):
  """Inside tf.map_fn (decode_and_resize) in a tf.function with unknown
  shapes: all eight orientations of one picture come out the same."""
  batch = [corpus.with_app1(
      _quality_jpeg(corpus.STORE_FOR_ORIENTATION[o](upright)),
      corpus.exif_app1(o, b'MM' if o % 2 else b'II')) for o in range(1, 9)]
  decode = tf.function(lambda e: image_codec.decode_and_resize(e, 24),
                       input_signature=[tf.TensorSpec(None, tf.string)])
  images = decode(tf.constant(batch)).numpy()
  assert np.abs(images - images[0]).mean(axis=(1, 2, 3)).max() < 2
  shapes = tf.function(lambda e: tf.map_fn(
      lambda x: tf.shape(image_codec.decode_rgb(x)), e,
      fn_output_signature=tf.int32))(tf.constant(batch)).numpy()
  assert shapes.tolist() == [[48, 72, 3]] * 8


def _malformed_app1s():
  """APP1 segments that must all read as orientation 1."""
  good = corpus.exif_app1(6, b'II')
  tiff = good[10:]
  def segment(tiff_bytes, length=None):
    length = len(tiff_bytes) + 8 if length is None else length
    return b'\xff\xe1' + struct.pack('>H', length) + b'Exif\0\0' + tiff_bytes
  return {
      'bad byte order': segment(b'XX' + tiff[2:]),
      'bad magic': segment(tiff[:2] + b'\x2b\x00' + tiff[4:]),
      'ifd offset past the end': segment(tiff[:4] + b'\xff\xff\xff\x7f' + tiff[8:]),
      'ifd offset inside the header': segment(tiff[:4] + b'\x02\0\0\0' + tiff[8:]),
      'orientation 0': segment(tiff.replace(b'\x12\x01\x03\x00\x01\x00\x00\x00\x06',
                                            b'\x12\x01\x03\x00\x01\x00\x00\x00\x00')),
      'orientation 9': segment(tiff.replace(b'\x12\x01\x03\x00\x01\x00\x00\x00\x06',
                                            b'\x12\x01\x03\x00\x01\x00\x00\x00\x09')),
      'orientation of type ASCII': segment(tiff.replace(b'\x12\x01\x03\x00',
                                                        b'\x12\x01\x02\x00')),
      'entry outside the segment': segment(tiff[:20], length=20 + 8),
      'tiny segment': segment(b'II'),
      'no Exif marker': b'\xff\xe1\x00\x0aNoExif' + tiff[:2],
  }


@pytest.mark.filterwarnings('ignore:Corrupt EXIF data')
def test_lenient_exif_is_read_as_pil_reads_it(upright):
  """PIL reads an IFD whose entry count runs past the segment, and a LONG
  orientation; so do we."""
  plain = _quality_jpeg(np.ascontiguousarray(corpus.STORE_FOR_ORIENTATION[6](upright)))
  tiff = corpus.exif_app1(6, b'MM')[10:]
  for tiff in (tiff[:8] + b'\xff\xff' + tiff[10:],
               tiff.replace(b'\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00',
                            b'\x01\x12\x00\x04\x00\x00\x00\x01\x00\x00\x00\x06')):
    encoded = corpus.with_app1(
        plain, b'\xff\xe1' + struct.pack('>H', len(tiff) + 8) + b'Exif\0\0' + tiff)
    pil = ImageOps.exif_transpose(Image.open(io.BytesIO(encoded)))
    assert int(image_codec.exif_orientation(encoded)) == 6
    assert image_codec.decode_rgb(encoded).shape[:2] == (pil.height, pil.width)


def test_malformed_exif_means_orientation_1(upright):
  plain = _quality_jpeg(upright)
  reference = image_codec.decode_rgb(plain).numpy()
  for name, app1 in _malformed_app1s().items():
    encoded = corpus.with_app1(plain, app1)
    assert int(image_codec.exif_orientation(encoded)) == 1, name
    np.testing.assert_array_equal(image_codec.decode_rgb(encoded).numpy(), reference,
                                  err_msg=name)
  # Not even a JPEG: truncated inside the segment, or bare garbage.
  good = corpus.with_app1(plain, corpus.exif_app1(6))
  for encoded in (good[:12], good[:30], b'', b'Exif\0\0', b'\xff\xd8\xff\xe1\xff\xff'
                  + b'Exif\0\0MM\0*' + b'\xff' * 64):
    assert int(image_codec.exif_orientation(encoded)) == 1, encoded


@pytest.mark.parametrize('min_size, scale', [(None, 1), (151, 1), (150, 2), (76, 2),
                                             (75, 4), (10, 4)])
def test_large_jpegs_decode_at_the_largest_dct_scale_that_fits(min_size, scale):
  """A JPEG at least twice `min_size` on both sides decodes at 1/2 or 1/4
  scale (libjpeg rounds the sides up); other formats at full size."""
  photo = skimage_data.chelsea()                          # 300 x 451
  encoded = _quality_jpeg(photo)
  shape = image_codec.decode_rgb(encoded, min_size=min_size).shape
  assert shape == (-(-300 // scale), -(-451 // scale), 3)
  png = corpus.encode(Image.fromarray(photo), 'PNG')
  assert image_codec.decode_rgb(png, min_size=min_size).shape == (300, 451, 3)


def test_a_dct_scaled_decode_resizes_to_what_a_full_decode_does():
  """The transform graph's decoder (`decode_and_resize`) decodes a large JPEG
  at a DCT scale: the model sees the picture a full-size decode and resize
  would give, within two grey levels (of 255) on average."""
  encoded = _quality_jpeg(skimage_data.chelsea())
  for size in (32, 64, 140):
    scaled = image_codec.decode_and_resize(tf.constant([encoded]), size)[0]
    full = tf.image.resize(tf.cast(image_codec.decode_rgb(encoded), tf.float32),
                           [size, size], antialias=True)
    assert float(tf.reduce_mean(tf.abs(scaled - full))) < 2.0, size


@pytest.mark.parametrize('progressive', [False, True])
def test_ingest_check_refuses_exactly_the_jpegs_the_decoder_refuses(progressive):
  """Ingest's check decodes a JPEG at 1/8 scale: cut anywhere, it must refuse
  what the transform graph's decoder (here at 1/2 and full scale) refuses, and
  report the size that decoder gives."""
  encoded = corpus.encode(Image.fromarray(skimage_data.chelsea()), 'JPEG', quality=90,
                          progressive=progressive)                   # 300 x 451
  for cut in (len(encoded) // 4, len(encoded) // 2, len(encoded) * 9 // 10,
              len(encoded) - 2, len(encoded)):
    data = encoded[:cut]
    shapes = []
    for min_size in (None, 150):
      try:
        shapes.append(tuple(image_codec.decode_rgb(data, min_size=min_size).shape[:2]))
      except tf.errors.InvalidArgumentError:
        shapes.append(None)
    if shapes[0] is None:
      assert shapes[1] is None, cut
      with pytest.raises(tf.errors.InvalidArgumentError):
        image_codec.ingest_check(data)
    else:
      assert shapes == [(300, 451), (150, 226)], cut
      assert tuple(image_codec.ingest_check(data)[1].numpy()) == (300, 451), cut


def test_the_batch_decoder_gives_the_eager_decoders_pixels():
  """`batch_decoder` (one graph per size, cached) decodes a batch of mixed
  formats, a DCT-scaled JPEG and an EXIF-rotated one among them, to exactly
  the pixels `decode_and_resize` gives eagerly."""
  photo = skimage_data.chelsea()
  batch = tf.constant([
      _quality_jpeg(photo), corpus.with_app1(_quality_jpeg(photo), corpus.exif_app1(6)),
      corpus.encode(Image.fromarray(photo), 'PNG'),
      corpus.encode(Image.fromarray(photo[:40, :50]), 'GIF'),
      corpus.encode(Image.fromarray(photo[:7, :9]), 'BMP')])
  for size in (32, 64):
    assert image_codec.batch_decoder(size) is image_codec.batch_decoder(size)
    np.testing.assert_array_equal(image_codec.batch_decoder(size)(batch).numpy(),
                                  image_codec.decode_and_resize(batch, size).numpy())
