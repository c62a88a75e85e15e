"""A corpus of hostile and odd files for ingest tests, with the expected outcome
of each.

`write_hostile_corpus(root, max_file_bytes)` writes class folders under `root`
(and two folders beside it that symlinks point to) and returns, for every
entry the ingest must account for (see `executor.list_files`), keyed by its
path relative to `root` (bytes that are not UTF-8 written `\\xNN`):

  {'outcome': 'ingested', 'label': ..., 'height': ..., 'width': ...}
  {'outcome': 'quarantined', 'reason': <substring of the recorded reason>}

Heights and widths are those a person sees (EXIF orientation applied).
"""

import io
import os
import struct
import zlib
from typing import Any, Dict

import numpy as np
from PIL import Image
from skimage import data as skimage_data

QUARANTINED = 'quarantined'
INGESTED = 'ingested'
UNSUPPORTED = 'not a supported image format'
TOO_LARGE = 'too large'
BROKEN_LINK = 'broken symlink'
FOLDER_READ = 'symlink to a folder already read'
HIDDEN = 'hidden file or folder'
NOT_REGULAR = 'not a regular file'
TOO_MANY_BYTES = 'data.max_file_bytes='
NOT_UTF8 = 'file name is not valid UTF-8'


def encode(image: Image.Image, image_format: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **options)
  return buffer.getvalue()


def exif_app1(orientation: int, byte_order: bytes = b'II') -> bytes:
  """An APP1 segment with a TIFF IFD0 of two entries: Make, then Orientation."""
  e = '<' if byte_order == b'II' else '>'
  make = b'Phone\0\0\0'
  ifd = (struct.pack(e + 'H', 2)
         + struct.pack(e + 'HHII', 0x010F, 2, len(make), 8 + 2 + 2 * 12 + 4)
         + struct.pack(e + 'HHIHH', 0x0112, 3, 1, orientation, 0)
         + struct.pack(e + 'I', 0))
  tiff = byte_order + struct.pack(e + 'HI', 42, 8) + ifd + make
  return b'\xff\xe1' + struct.pack('>H', len(tiff) + 8) + b'Exif\0\0' + tiff


def with_app1(jpeg: bytes, app1: bytes) -> bytes:
  """`jpeg` with a segment inserted right after SOI."""
  return jpeg[:2] + app1 + jpeg[2:]


# EXIF orientation -> how to store an upright picture so that applying the
# orientation (as PIL.ImageOps.exif_transpose does) gives it back.
STORE_FOR_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),      # displayed after a 90° clockwise turn
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),     # displayed after a 90° counter-clockwise turn
}


def phone_photo(upright: np.ndarray, orientation: int, byte_order=b'II',
                **options) -> bytes:
  stored = np.ascontiguousarray(STORE_FOR_ORIENTATION[orientation](upright))
  return with_app1(encode(Image.fromarray(stored), 'JPEG', **options),
                   exif_app1(orientation, byte_order))


def peak_rss_mb() -> float:
  """Peak resident memory of this process since the last reset (Linux VmHWM)."""
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f
                if line.startswith('VmHWM:')) / 1024


def reset_peak_rss() -> None:
  """Starts a new peak-RSS window (Linux: 5 > /proc/self/clear_refs)."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  return (struct.pack('>I', len(payload)) + kind + payload
          + struct.pack('>I', zlib.crc32(kind + payload)))


def png_bomb(width: int, height: int) -> bytes:
  """A valid 1-bit grayscale PNG of zeros: ~1/1000 of its raw size on disk,
  3 bytes a pixel once decoded to RGB."""
  row = b'\0' * (1 + (width + 7) // 8)
  compressor = zlib.compressobj(9)
  rows_per_chunk = max(1, (1 << 22) // len(row))
  parts = []
  for start in range(0, height, rows_per_chunk):
    parts.append(compressor.compress(row * min(rows_per_chunk, height - start)))
  parts.append(compressor.flush())
  return (b'\x89PNG\r\n\x1a\n'
          + _png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0))
          + _png_chunk(b'IDAT', b''.join(parts)) + _png_chunk(b'IEND', b''))


def gif_bomb(width: int = 65535, height: int = 65535) -> bytes:
  """A 1×1 frame on a huge logical screen (TF allocates the whole screen)."""
  return (b'GIF89a' + struct.pack('<HHBBB', width, height, 0x80, 0, 0)
          + b'\0\0\0\xff\xff\xff'                      # 2-colour palette
          + b',' + struct.pack('<HHHHB', 0, 0, 1, 1, 0)  # image descriptor
          + b'\x02\x02\x44\x01\x00' + b';')


def jpeg_bomb(small_jpeg: bytes, width: int = 60000, height: int = 60000) -> bytes:
  """A small JPEG whose SOF0 marker is patched to declare a huge size."""
  sof = small_jpeg.index(b'\xff\xc0')
  return (small_jpeg[:sof + 5] + struct.pack('>HH', height, width)
          + small_jpeg[sof + 9:])


def top_down_bmp(image: Image.Image) -> bytes:
  """A 24-bit BMP with negative height: rows stored top to bottom."""
  data = bytearray(encode(image.convert('RGB'), 'BMP'))
  width, height = image.size
  offset = struct.unpack('<I', data[10:14])[0]
  stride = (width * 3 + 3) & ~3
  rows = [bytes(data[offset + i * stride: offset + (i + 1) * stride])
          for i in range(height)]
  data[22:26] = struct.pack('<i', -height)
  return bytes(data[:offset]) + b''.join(reversed(rows))


def animated_gif(rng, size=(30, 20), frames=3) -> bytes:
  images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            for _ in range(frames)]
  return encode(images[0], 'GIF', save_all=True, append_images=images[1:],
                duration=100, loop=0)


def write_hostile_corpus(root: str, max_file_bytes: int) -> Dict[str, Dict[str, Any]]:
  """Writes the corpus under `root`; returns the expected outcome per entry.

  Files above `max_file_bytes` are sparse: they cost no disk."""
  rng = np.random.default_rng(7)
  root = os.path.abspath(root)
  outside = os.path.join(os.path.dirname(root), 'outside')
  outside_class = os.path.join(os.path.dirname(root), 'outside_class')
  expected: Dict[str, Dict[str, Any]] = {}
  chelsea = skimage_data.chelsea()            # 300 x 451 RGB photo of a cat
  small = np.asarray(Image.fromarray(chelsea).resize((90, 60)))
  rgb = Image.fromarray(small)

  def write(relative, payload, base=root):
    path = os.path.join(base, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(payload)
    return path

  def ok(relative, payload, height, width):
    write(relative, payload)
    expected[relative] = {'outcome': INGESTED, 'label': relative.split('/')[0],
                          'height': height, 'width': width}

  def bad(relative, payload, reason):
    write(relative, payload)
    expected[relative] = {'outcome': QUARANTINED, 'reason': reason}

  def link(relative, target, outcome):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)
    expected[relative] = outcome

  jpeg = encode(rgb, 'JPEG', quality=90)
  png = encode(rgb, 'PNG')
  variants = iter(range(1, 100))

  def unique(image_format):
    """The small photo with one pixel changed: every ingested file has its own
    content, so no duplicate (or duplicate-label) handling interferes here."""
    pixels = small.copy()
    pixels[0, 0] = next(variants)
    return encode(Image.fromarray(pixels), image_format)

  # --- real photos, formats and channel layouts TF accepts -----------------
  ok('cat/chelsea.jpg', encode(Image.fromarray(chelsea), 'JPEG', quality=95), 300, 451)
  ok('cat/phone rot6 II.jpg', phone_photo(chelsea, 6, b'II', quality=95), 300, 451)
  ok('dog/phone_rot8_MM.jpg', phone_photo(chelsea, 8, b'MM', quality=95), 300, 451)
  ok('dog/phone_rot3_II.jpg', phone_photo(chelsea, 3, b'II', quality=95), 300, 451)
  ok('cat/cmyk.jpg', encode(rgb.convert('CMYK'), 'JPEG'), 60, 90)
  ok('cat/gray.jpg', encode(rgb.convert('L'), 'JPEG'), 60, 90)
  ok('cat/progressive.jpg', encode(rgb, 'JPEG', progressive=True), 60, 90)
  ok('cat/gray.png', encode(rgb.convert('L'), 'PNG'), 60, 90)
  ok('cat/gray_alpha.png', encode(rgb.convert('LA'), 'PNG'), 60, 90)
  ok('cat/rgba.png', encode(rgb.convert('RGBA'), 'PNG'), 60, 90)
  sixteen = (np.asarray(rgb.convert('L'), np.uint16) * 257).astype(np.uint16)
  ok('cat/sixteen_bit.png', encode(Image.fromarray(sixteen), 'PNG'), 60, 90)
  ok('cat/palette_transparent.png',
     encode(rgb.convert('P', palette=Image.Palette.ADAPTIVE), 'PNG', transparency=0),
     60, 90)
  ok('cat/animated.gif', animated_gif(rng), 20, 30)
  ok('cat/rgb.bmp', encode(rgb, 'BMP'), 60, 90)
  ok('cat/gray8.bmp', encode(rgb.convert('L'), 'BMP'), 60, 90)
  ok('cat/top_down.bmp', top_down_bmp(rgb), 60, 90)
  one = Image.new('RGB', (1, 1), (200, 30, 90))
  for image_format, extension in (('PNG', 'png'), ('JPEG', 'jpg'), ('GIF', 'gif'),
                                  ('BMP', 'bmp')):
    ok(f'dog/one_by_one.{extension}', encode(one, image_format), 1, 1)
  large = Image.fromarray(chelsea).resize((6000, 4000), Image.Resampling.BILINEAR)
  ok('dog/large_24mp.jpg', encode(large, 'JPEG', quality=80), 4000, 6000)
  ok('dog/café ünïcode 猫.png', unique('PNG'), 60, 90)
  ok('dog/name with spaces.jpg', unique('JPEG'), 60, 90)
  ok('cat/nested/deeper/inner.png', unique('PNG'), 60, 90)
  ok('solo/only.png', encode(Image.fromarray(small[::-1]), 'PNG'), 60, 90)
  os.makedirs(os.path.join(root, 'empty_class'))

  # --- broken, hostile and unsupported files --------------------------------
  bad('cat/empty.jpg', b'', 'empty file')
  bad('cat/truncated.jpg', jpeg[:len(jpeg) // 2], 'undecodable jpeg')
  bad('cat/truncated.png', png[:len(png) // 2], 'undecodable png')
  bad('cat/header_only.png', png[:33], 'undecodable png')
  bad('dog/text.jpg', b'this is text, not a picture\n' * 20, UNSUPPORTED)
  bad('dog/random.jpg', b'\0' + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
      UNSUPPORTED)
  bad('cat/bomb.png', png_bomb(25000, 25000), TOO_LARGE)
  bad('cat/bomb.gif', gif_bomb(), TOO_LARGE)
  bad('dog/bomb.jpg', jpeg_bomb(jpeg), TOO_LARGE)
  bad('cat/photo.webp', encode(rgb, 'WEBP'), UNSUPPORTED)
  bad('cat/photo.heic', b'\0\0\0\x18ftypheic\0\0\0\0mif1heic' + bytes(256), UNSUPPORTED)
  bad('cat/scan.tiff', encode(rgb, 'TIFF'), UNSUPPORTED)
  bad('cat/one_bit.bmp', encode(rgb.convert('1'), 'BMP'), 'undecodable bmp')
  bad('cat/palette.bmp', encode(rgb.convert('P', palette=Image.Palette.ADAPTIVE), 'BMP'),
      'colour palette')
  bad('cat/.DS_Store', b'\0\0\0\x01Bud1' + bytes(64), HIDDEN)
  bad('cat/.hidden_photo.jpg', jpeg, HIDDEN)
  bad('.hidden_folder/photo.png', png, HIDDEN)
  bad('dog/Thumbs.db', b'\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1' + bytes(512), UNSUPPORTED)
  bad('README.txt', b'my photos\n', 'not inside a class folder')
  bad('stray.png', png, 'not inside a class folder')

  # --- symlinks --------------------------------------------------------------
  write('photo.jpg', unique('JPEG'), base=outside)
  write('a.png', unique('PNG'), base=outside_class)
  write('sub/b.jpg', unique('JPEG'), base=outside_class)
  link('cat/link_to_outside.jpg', os.path.join(outside, 'photo.jpg'),
       {'outcome': INGESTED, 'label': 'cat', 'height': 60, 'width': 90})
  link('cat/broken link.jpg', os.path.join(outside, 'missing.jpg'),
       {'outcome': QUARANTINED, 'reason': BROKEN_LINK})
  link('cat/loop_a.jpg', 'loop_b.jpg', {'outcome': QUARANTINED, 'reason': BROKEN_LINK})
  link('cat/loop_b.jpg', 'loop_a.jpg', {'outcome': QUARANTINED, 'reason': BROKEN_LINK})
  link('cat/nested/up', '..', {'outcome': QUARANTINED, 'reason': FOLDER_READ})
  link('dog/cats_again', '../cat/nested', {'outcome': QUARANTINED, 'reason': FOLDER_READ})
  # A whole class that is a symlink to a folder elsewhere: followed. Inside
  # it, a link back to the data folder: a loop, not followed.
  link('linked_class', outside_class, None)
  del expected['linked_class']
  os.symlink(root, os.path.join(outside_class, 'back_to_root'))
  for relative, height, width in (('a.png', 60, 90), ('sub/b.jpg', 60, 90)):
    expected[f'linked_class/{relative}'] = {
        'outcome': INGESTED, 'label': 'linked_class', 'height': height, 'width': width}
  expected['linked_class/back_to_root'] = {'outcome': QUARANTINED,
                                           'reason': FOLDER_READ}

  # --- special files, size, names: never opened (a FIFO would block the run,
  # a device or a huge file fill the memory) -----------------------------------
  def sparse(path, size):
    with open(path, 'wb') as f:
      f.truncate(size)

  os.mkfifo(os.path.join(root, 'cat', 'pipe.jpg'))
  expected['cat/pipe.jpg'] = {'outcome': QUARANTINED, 'reason': f'{NOT_REGULAR} (fifo)'}
  link('dog/null_device.jpg', os.devnull,
       {'outcome': QUARANTINED, 'reason': f'{NOT_REGULAR} (character device)'})
  sparse(os.path.join(root, 'dog', 'huge.png'), max_file_bytes + 1)
  expected['dog/huge.png'] = {'outcome': QUARANTINED,
                              'reason': f'{max_file_bytes + 1} bytes'}
  sparse(os.path.join(outside, 'huge.jpg'), 100 * max_file_bytes)
  link('cat/link_to_huge.jpg', os.path.join(outside, 'huge.jpg'),
       {'outcome': QUARANTINED, 'reason': TOO_MANY_BYTES})
  write('cat/caf\udce9.png', png)        # named b'caf\xe9.png': Latin-1, not UTF-8
  expected['cat/caf\\xe9.png'] = {'outcome': QUARANTINED, 'reason': NOT_UTF8}
  return expected
