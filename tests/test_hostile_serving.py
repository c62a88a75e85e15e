"""Hostile input to the published model's `serving_default` signature.

The model is the end-to-end run's published version (tests/conftest.py,
read only), loaded in this process as TF Serving would load it. Empty
strings, random bytes, text, truncated images and decompression bombs (small
files whose header declares billions of pixels, of every format the decoder
reads) must each fail the request with a tf.errors.InvalidArgumentError
naming the problem, never crash the process nor allocate memory for the
declared size; a batch mixing valid and invalid images fails as a whole (the
signature has no per-item status); a valid batch afterwards still gets the
same probabilities as before.

`python -m pipeline predict` gives the per-file status: on a failed batch it
scores the images one by one (pipeline/predict.py), so one bomb costs only
itself.
"""

import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from models import image_codec
from models import signatures
from pipeline import __main__ as cli

from helpers import E2E_CLASSES, REPO_ROOT, sample_bytes

# Peak RSS may grow by at most this much over all the hostile requests; a
# decoded 100000 x 100000 image would be 30 GB.
MAX_RSS_GROWTH_MB = 300


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack('>I', len(data)) + kind + data +
          struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))


def _png(width: int, height: int, idat: bytes) -> bytes:
  return (b'\x89PNG\r\n\x1a\n' +
          _chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
          _chunk(b'IDAT', idat) + _chunk(b'IEND', b''))


def png_header_bomb(width=100_000, height=100_000) -> bytes:
  """A 100-byte PNG whose IHDR declares width x height RGB pixels."""
  return _png(width, height, zlib.compress(b'\0' * 64))


def png_zlib_bomb(width=10_000, height=10_000) -> bytes:
  """A valid PNG: width x height black pixels (300 MB raw), ~300 KB of zlib."""
  compressor = zlib.compressobj(9)
  row = b'\0' * (1 + 3 * width)      # filter byte + RGB
  data = b''.join(compressor.compress(row) for _ in range(height)) + compressor.flush()
  return _png(width, height, data)


def _jpeg(size=32) -> bytes:
  out = io.BytesIO()
  Image.new('RGB', (size, size), (200, 30, 30)).save(out, 'JPEG')
  return out.getvalue()


def jpeg_bomb(width=65_000, height=65_000) -> bytes:
  """A small JPEG with its SOF0 frame size patched to width x height."""
  jpeg = _jpeg()
  sof = jpeg.index(b'\xff\xc0')
  return jpeg[:sof + 5] + struct.pack('>HH', height, width) + jpeg[sof + 9:]


def gif_bomb() -> bytes:
  """A GIF whose logical screen is 65535 x 65535 around a 1x1 image."""
  return (b'GIF89a' + struct.pack('<HH', 65535, 65535) + b'\x00\x00\x00' +
          b',' + struct.pack('<HHHH', 0, 0, 1, 1) + b'\x00\x02\x02\x44\x01\x00;')


def _lzw_zeros(pixels: int) -> bytes:
  """GIF image data (LZW, code size 2) for `pixels` zeros: codes for ever
  longer runs, then the longest (4091 pixels, 12 bits) once the table is
  full, so 144 M pixels fit in 55 KB. Code widths follow giflib's decoder."""
  bits, next_code, limit = 3, 6, 8
  value = count = 0
  done, step = 0, 0
  codes = [4]                                     # clear
  while done < pixels:
    codes.append(0 if step == 0 else min(step + 5, 4095))
    done += 1 if step == 0 else codes[-1] - 4
    step += 1
  for index, code in enumerate(codes):
    value |= code << count
    count += bits
    if index and next_code < 4097:                # the clear code resets
      next_code += 1
      if next_code > limit and bits < 12:
        limit, bits = limit * 2, bits + 1
  data = value.to_bytes((count + 7) // 8, 'little')
  return b'\x02' + b''.join(bytes([len(data[i:i + 255])]) + data[i:i + 255]
                            for i in range(0, len(data), 255)) + b'\x00'


def gif_frame_bomb(width=12_000, height=12_000) -> bytes:
  """A valid 55 KB GIF: a 1x1 logical screen holding one width x height frame
  of zeros. TF sizes its output by the frame (12000 x 12000: 432 MB)."""
  return (b'GIF89a' + struct.pack('<HH', 1, 1) + b'\x80\x00\x00' + b'\x00' * 3 +
          b'\xff' * 3 + b',' + struct.pack('<HHHH', 0, 0, width, height) +
          b'\x00' + _lzw_zeros(width * height) + b';')


def gif_other_version(version: bytes) -> bytes:
  """A 35-byte GIF of another version than 87a/89a, which TF's decoder takes:
  a 12000 x 12000 logical screen, a global colour table and a 1x1 frame."""
  return (b'GIF8' + version + struct.pack('<HH', 12_000, 12_000) +
          b'\x80\x00\x00' + b'\x00' * 6 + b',' + struct.pack('<HHHH', 0, 0, 1, 1) +
          b'\x00\x02\x02\x44\x01\x00;')


def bmp_bomb() -> bytes:
  """A 54-byte BMP header declaring 100000 x 100000 24-bit pixels."""
  return (b'BM' + struct.pack('<IHHI', 54, 0, 0, 54) +
          struct.pack('<IiiHHIIiiII', 40, 100_000, 100_000, 1, 24, 0, 0, 0, 0, 0, 0))


_TOO_LARGE = r'Image too large: its header declares {} pixels \(width x height\)'
_UNKNOWN = r'Unknown image file format\. One of JPEG, PNG, GIF, BMP required'
_GIF_VERSION = (r'Unsupported GIF version: only GIF87a and GIF89a files are read; '
                r'refused before decoding')

# name -> (bytes, a regex the error message must match)
HOSTILE = {
    'empty string': (lambda: b'', r'Input is empty'),
    'random bytes': (lambda: random.Random(0).randbytes(4096), _UNKNOWN),
    'text file': (lambda: b'label,path\ncat,cat.jpg\n' * 50, _UNKNOWN),
    'GIF88a 12000x12000 screen': (lambda: gif_other_version(b'8a'),
                                  _GIF_VERSION),
    'GIF8\\0\\0 12000x12000 screen': (lambda: gif_other_version(b'\0\0'),
                                    _GIF_VERSION),
    'truncated JPEG': (lambda: _jpeg(64)[:300], r'Invalid JPEG data'),
    'PNG header bomb 100000x100000': (png_header_bomb, _TOO_LARGE.format('100000x100000')),
    'PNG zlib bomb 10000x10000': (png_zlib_bomb, _TOO_LARGE.format('10000x10000')),
    'JPEG bomb 65000x65000': (jpeg_bomb, _TOO_LARGE.format('65000x65000')),
    'GIF bomb 65535x65535': (gif_bomb, _TOO_LARGE.format('65535x65535')),
    'GIF frame bomb 12000x12000 in a 1x1 screen': (gif_frame_bomb,
                                                   _TOO_LARGE.format('12000x12000')),
    'BMP bomb 100000x100000': (bmp_bomb, _TOO_LARGE.format('100000x100000')),
}
LIMIT = r'more than the limit of \d+ \(data\.max_image_pixels\); refused before decoding'


@pytest.fixture(scope='module')
def serve(e2e_first_run):
  loaded = tf.saved_model.load(e2e_first_run.pushed_to)
  signature = loaded.signatures[signatures.SERVING_SIGNATURE]

  def call(images):
    outputs = signature(**{signatures.SERVING_INPUT: tf.constant(images, tf.string)})
    return {name: value.numpy() for name, value in outputs.items()}

  call.loaded = loaded      # keeps the model alive
  return call


def read_valid_images():
  """The first bundled image of each class the model knows, as bytes."""
  return [sample_bytes(name, 0) for name in E2E_CLASSES]


@pytest.fixture(scope='module')
def valid_images():
  return read_valid_images()


def _refused(serve, images):
  """The InvalidArgumentError message of a request that must fail."""
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    serve(images)
  return raised.value.message


def _hostile_calls(serve, valid_images):
  """Every hostile input alone and mixed with valid images, a batch of bombs
  and one of everything; returns {name: first line of its error message}."""
  hostile = {name: make() for name, (make, _) in HOSTILE.items()}
  messages = {}
  for name, (_, expected) in HOSTILE.items():
    for images in ([hostile[name]],                                  # alone
                   [valid_images[0], hostile[name], valid_images[1]]):  # mixed
      message = _refused(serve, images)
      assert re.search(expected, message), (name, message)
      if 'bomb' in name:
        assert re.search(LIMIT, message), (name, message)
    messages[name] = next(line.strip() for line in message.splitlines()
                          if re.search(expected, line))[:300]
  _refused(serve, [hostile['PNG zlib bomb 10000x10000']] * 16)
  _refused(serve, list(hostile.values()) + valid_images)
  return messages


def test_hostile_requests_fail_clearly_and_the_model_keeps_serving(serve, valid_images):
  before = serve(valid_images)
  assert before['probabilities'].shape == (3, len(E2E_CLASSES))
  messages = _hostile_calls(serve, valid_images)
  after = serve(valid_images)
  np.testing.assert_allclose(after['probabilities'], before['probabilities'], atol=1e-6)
  np.testing.assert_allclose(after['probabilities'].sum(axis=1), 1.0, atol=1e-5)
  assert list(after['class_name']) == list(before['class_name'])
  print('\nHostile serving messages:\n' +
        '\n'.join(f'  {name}: {text}' for name, text in messages.items()))


# In a fresh process, whose peak RSS before the hostile calls is only the
# loaded model's (this test process's peak already holds the pipeline run's),
# and which a crash (abort, OOM kill) would end with a signal, not pytest.
_SERVER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    import test_hostile_serving as hostile
    from models import signatures
    signature = tf.saved_model.load(sys.argv[1]).signatures[signatures.SERVING_SIGNATURE]
    def serve(images):
      outputs = signature(**{signatures.SERVING_INPUT: tf.constant(images, tf.string)})
      return {name: value.numpy() for name, value in outputs.items()}
    valid = hostile.read_valid_images()
    before = serve(valid)
    serve(valid)
    # VmHWM, not ru_maxrss, which in a child forked from a big process
    # starts at the parent's size.
    from hostile_corpus import peak_rss_mb
    rss_before = peak_rss_mb()
    messages = hostile._hostile_calls(serve, valid)
    rss_after = peak_rss_mb()
    after = serve(valid)
    print(json.dumps({
        'peak_rss_before_mb': rss_before, 'peak_rss_after_mb': rss_after,
        'same_probabilities': bool(np.allclose(after['probabilities'],
                                               before['probabilities'], atol=1e-6)),
        'messages': messages}))
''')


def test_hostile_requests_do_not_grow_memory_nor_kill_a_fresh_server(
    e2e_first_run, tmp_path):
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  result = subprocess.run(
      [sys.executable, '-c', _SERVER, e2e_first_run.pushed_to],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, 'TF_USE_LEGACY_KERAS': '1',
           'PYTHONPATH': os.pathsep.join([REPO_ROOT, tests_dir])})
  assert result.returncode == 0, result.stderr[-3000:]   # no crash, no abort
  found = json.loads(result.stdout.strip().splitlines()[-1])
  growth = found['peak_rss_after_mb'] - found['peak_rss_before_mb']
  assert found['same_probabilities']
  assert growth < MAX_RSS_GROWTH_MB, found
  (tmp_path / 'hostile_serving.json').write_text(json.dumps(found, indent=2))
  print(f"\nFresh server: peak RSS {found['peak_rss_before_mb']:.0f} MB before the "
        f"hostile calls, {found['peak_rss_after_mb']:.0f} MB after (+{growth:.1f} MB)")


# The GIFs TF's decoder reads but the size guard used to miss, through a saved
# graph running `image_codec.decode_and_resize` (what Transform and the
# serving signature run) in a fresh process: peak RSS (VmHWM, reset before
# each call) and the message of each, then a 6000 x 6000 frame the limit
# allows, to show the measurement sees a decode.
_GIF_PROBE = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    import test_hostile_serving as hostile
    from models import image_codec
    decode = tf.saved_model.load(sys.argv[1])
    cases = {'GIF88a': hostile.gif_other_version(b'8a'),
             'GIF8\\\\0\\\\0': hostile.gif_other_version(b'\\0\\0'),
             'frame 12000x12000 in a 1x1 screen': hostile.gif_frame_bomb(),
             'control: frame 6000x6000': hostile.gif_frame_bomb(6000, 6000)}
    from hostile_corpus import peak_rss_mb as peak_mb, reset_peak_rss as reset_peak
    decode(tf.constant([hostile.gif_frame_bomb(8, 8)]))       # warm up
    found = {}
    for name, content in cases.items():
      reset_peak()
      before = peak_mb()
      try:
        result = list(decode(tf.constant([content])).shape)
      except tf.errors.InvalidArgumentError as error:
        result = image_codec.error_text(error)
      found[name] = {'peak_rss_growth_mb': peak_mb() - before, 'result': result}
    print(json.dumps(found))
''')


def test_gifs_the_guard_does_not_size_are_refused_in_a_saved_graph(tmp_path):
  class Decoder(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, encoded):
      return image_codec.decode_and_resize(encoded, 8)

  tf.saved_model.save(Decoder(), str(tmp_path / 'decoder'))
  result = subprocess.run(
      [sys.executable, '-c', _GIF_PROBE, str(tmp_path / 'decoder')],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONPATH': os.pathsep.join(
          [REPO_ROOT, os.path.dirname(os.path.abspath(__file__))])})
  assert result.returncode == 0, result.stderr[-3000:]
  found = json.loads(result.stdout.strip().splitlines()[-1])
  print('\nGIF probe:', json.dumps(found, indent=1))
  for name in ('GIF88a', 'GIF8\\0\\0'):
    assert re.search(_GIF_VERSION, found[name]['result']), found
  assert re.search(_TOO_LARGE.format('12000x12000') + '.*' + LIMIT,
                   found['frame 12000x12000 in a 1x1 screen']['result']), found
  assert all(case['peak_rss_growth_mb'] < 20 for name, case in found.items()
             if not name.startswith('control')), found
  control = found['control: frame 6000x6000']
  assert control['result'] == [1, 8, 8, 3] and control['peak_rss_growth_mb'] > 100, found


def test_empty_batch_gives_empty_outputs(serve, valid_images):
  outputs = serve([])
  assert outputs['probabilities'].shape == (0, len(E2E_CLASSES))
  assert outputs['class_id'].shape == (0,) and outputs['class_name'].shape == (0,)
  assert serve(valid_images[:1])['probabilities'].shape == (1, len(E2E_CLASSES))


def test_predict_scores_a_mixed_folder_file_by_file(
    e2e_first_run, serve, valid_images, tmp_path, capsys):
  """predict on a folder of valid images, a bomb and junk, in one batch: the
  batch fails, so each file is scored on its own; only the bad ones get an error."""
  folder = tmp_path / 'mixed'
  folder.mkdir()
  for i, content in enumerate(valid_images):
    (folder / f'{i}_valid.png').write_bytes(content)
  (folder / '3_bomb.png').write_bytes(png_header_bomb())
  (folder / '4_empty.jpg').write_bytes(b'')
  (folder / '5_zlib_bomb.png').write_bytes(png_zlib_bomb())
  (folder / '6_gif88a.gif').write_bytes(gif_other_version(b'8a'))
  (folder / '7_gif_frame_bomb.gif').write_bytes(gif_frame_bomb())
  code = cli.main(['predict', '--model', e2e_first_run.pushed_to, str(folder),
                   '--batch-size', '8'])
  captured = capsys.readouterr()
  rows = [json.loads(line) for line in captured.out.splitlines()]
  assert code == 1
  assert [os.path.basename(row['path']) for row in rows] == sorted(os.listdir(folder))
  assert [row['class_name'] for row in rows[:3]] == [
      name.decode() for name in serve(valid_images)['class_name']]
  assert all('error' not in row for row in rows[:3])
  errors = [row.get('error', '') for row in rows[3:]]
  assert errors[0].startswith('not a usable image: Image too large: its header '
                              'declares 100000x100000 pixels'), errors
  assert errors[1] == 'not a usable image: Input is empty.', errors
  assert errors[2].startswith('not a usable image: Image too large'), errors
  assert errors[3].startswith('not a usable image: Unsupported GIF version'), errors
  assert errors[4].startswith('not a usable image: Image too large: its header '
                              'declares 12000x12000 pixels'), errors
  assert '[[' not in ''.join(errors) and 'Op:' not in ''.join(errors), errors
  assert 'Scored 3 of 8 files, 5 failed.' in captured.err
