"""The one image decoder used at ingest, in Transform and at serving time.

Ingest judges decodability with exactly the function the transform graph runs,
so an image accepted by ExampleGen can never fail later in Transform, the
Trainer, the Evaluator or a serving request.

Everything below is plain TensorFlow ops (no `tf.py_function`), so it is
serialized into the transform graph and every exported SavedModel, and works
eagerly, inside `tf.function` with unknown shapes and inside `tf.map_fn`.

What TensorFlow's decoder (TF 2.16) makes of odd inputs, checked against
Pillow by tests/test_hostile_ingest.py:

* accepted, decoded to uint8 RGB [H, W, 3] of the declared size: CMYK and
  grayscale JPEG, progressive JPEG, 16-bit PNG (scaled to 8 bits), palette PNG
  with tRNS transparency and gray+alpha / RGBA PNG (alpha dropped, not
  composited), animated GIF (first frame), 1×1 images of every format, 24/32
  bit and grayscale-palette 8-bit BMP;
* refused (quarantined at ingest with the decoder's reason): WebP, HEIC/AVIF,
  TIFF and anything else without a JPEG/PNG/GIF/BMP signature (by
  `sniff_format` at ingest, by the same table in the graph; for WebP and TIFF
  the reason says how to convert them, `conversion_hint`), 1-bit BMP ("Number of channels inherent in the image must
  be 1, 3 or 4"), truncated or corrupt files;
* refused by this module: images whose header declares more pixels than
  `max_pixels` (a decompression bomb, see `declared_size`), and 8-bit BMPs
  with a colour palette, which TF would silently decode as the palette
  *indices* shown as gray levels.

JPEG EXIF orientation (tag 0x0112) is applied after decoding, so a phone photo
comes out upright, as a person (and `PIL.ImageOps.exif_transpose`) sees it.
"""

import functools
import re
from typing import List, Tuple

import tensorflow as tf

# The formats decoded, by their leading magic bytes: the only files `decode_rgb`
# passes to TF's decoder, which would also take other GIF versions.
_MAGIC_BYTES = (
    (b'\xff\xd8\xff', 'jpeg'),
    (b'\x89PNG\r\n\x1a\n', 'png'),
    (b'GIF87a', 'gif'),
    (b'GIF89a', 'gif'),
    (b'BM', 'bmp'),
)
SUPPORTED_FORMATS = ('jpeg', 'png', 'gif', 'bmp')
# What browsers (WebP) and scanners (TIFF) save, which no TF 2.16 op decodes
# (tf.io has no decode_webp or decode_tiff): refused, saying how to convert.
# (name, test of the leading bytes, the files' usual names as a shell glob)
_CONVERTIBLE_FORMATS = (
    ('WebP', lambda head: head[:4] == b'RIFF' and head[8:12] == b'WEBP', '*.webp'),
    ('TIFF', lambda head: head[:4] in (b'II*\0', b'MM\0*'), '*.tif*'),
)

# The most pixels (width × height × decoded GIF frames) an image may declare.
# Decoding costs 3 bytes per pixel for the uint8 RGB tensor (plus up to 4× that
# as float32 while resizing): 50 M pixels is 150 MB decoded, 600 MB as floats.
# The pipeline passes `data.max_image_pixels`; this is its default.
DEFAULT_MAX_PIXELS = 50_000_000

# The scales a large JPEG is decoded at (`tf.io.decode_jpeg`'s ratio). libjpeg
# also offers 1/8, but there it keeps only each 8x8 block's mean: up to 4 grey
# levels from a full decode and resize, against <= 2 at 1/2 and 1/4.
JPEG_SCALES = (1, 2, 4)

_EXIF_WINDOW = 65536          # bytes of the APP1 segment read (its maximum size)
_EXIF_SEARCH = 65536          # the Exif APP1 segment must start in these bytes
_EXIF_MAX_ENTRIES = 128       # IFD0 entries looked at for the orientation tag
_ORIENTATION_TAG = 0x0112


def sniff_format(encoded: bytes) -> str | None:
  """The image format named by the file's magic bytes, or None if unsupported."""
  for magic, name in _MAGIC_BYTES:
    if encoded.startswith(magic):
      return name
  return None


def conversion_hint(encoded: bytes) -> str:
  """For a WebP or TIFF file, '; it is WebP ...' with a one-step conversion to
  PNG, to end the reason it is refused with; else ''."""
  for name, matches, glob in _CONVERTIBLE_FORMATS:
    if matches(encoded[:12]):
      return (f'; it is {name}, which TensorFlow 2.16 cannot decode: convert it '
              f'to PNG in its folder with ImageMagick, `mogrify -format png {glob}`, '
              f'and move the {name} files out')
  return ''


def _fixed_bytes(encoded: tf.Tensor, start, length: int) -> tf.Tensor:
  """`length` bytes of `encoded` from `start` as int64, zero-padded past the end."""
  start = tf.clip_by_value(tf.cast(start, tf.int64), 0,
                           tf.cast(tf.strings.length(encoded), tf.int64))
  window = tf.strings.join([
      tf.strings.substr(encoded, tf.cast(start, tf.int32), length),
      tf.constant(b'\0' * length)])
  raw = tf.io.decode_raw(tf.strings.substr(window, 0, length), tf.uint8)
  return tf.cast(tf.reshape(raw, [length]), tf.int64)


def _starts_with(encoded: tf.Tensor, magic: bytes) -> tf.Tensor:
  return tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic)


def _uint(data: tf.Tensor, offset, size: int, little_endian) -> tf.Tensor:
  """Unsigned `size`-byte integer(s) at `offset` (a scalar or a vector) of an
  int64 byte vector. Indices are clipped, so any offset is safe (garbage in,
  garbage number out, never an error)."""
  last = tf.shape(data, out_type=tf.int64)[0] - 1
  offset = tf.cast(offset, tf.int64)[..., None]
  parts = tf.gather(data, tf.clip_by_value(
      offset + tf.range(size, dtype=tf.int64), 0, last))
  little = tf.reduce_sum(parts * (256 ** tf.range(size, dtype=tf.int64)), -1)
  big = tf.reduce_sum(
      parts * (256 ** tf.range(size - 1, -1, -1, dtype=tf.int64)), -1)
  return tf.where(tf.cast(little_endian, tf.bool), little, big)


def _is_format(encoded: tf.Tensor, name: str) -> tf.Tensor:
  """Whether `encoded` starts with one of the magic bytes of format `name`."""
  return tf.reduce_any(tf.stack([_starts_with(encoded, magic)
                                 for magic, format_name in _MAGIC_BYTES
                                 if format_name == name]))


def _is_known_format(encoded: tf.Tensor) -> tf.Tensor:
  return tf.reduce_any(tf.stack([_is_format(encoded, name)
                                 for name in SUPPORTED_FORMATS]))


def _gif_size(encoded: tf.Tensor) -> tf.Tensor:
  """[height, width, frames] of a GIF: the largest of its logical screen and of
  every frame's image descriptor, and the number of frames.

  TF sizes its output by the largest frame, not the screen, and giflib
  allocates a raster per frame, so a huge frame in a 1x1 screen must count.
  The loops walk the blocks as giflib's DGifSlurp reads them: after the screen
  descriptor and global colour table, ',' (image descriptor, local colour
  table, LZW code size, data sub-blocks), '!' (label, sub-blocks), and ';' or
  anything else ends the file. The inner loop is kept to a few ops per
  sub-block (<= 255 bytes each): 0.12 s for a 2.8 MB GIF in a graph.
  """
  data = tf.io.decode_raw(encoded, tf.uint8)
  length = tf.size(data, out_type=tf.int64)

  def byte(position):
    return tf.cast(tf.gather(data, tf.minimum(position, length - 1)), tf.int64)

  def colour_table_bytes(flags):
    present = flags // 128
    return 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8) * present

  def next_sub_block(position):
    size = byte(position)
    return tf.where(tf.logical_and(position < length, size > 0),
                    position + 1 + size, position)

  def past_sub_blocks(position):
    """Where the sub-blocks (a length byte, then as many bytes) starting at
    `position` end, after their empty terminator. Eight per loop step, as
    the loop's own cost dominates."""
    def eight(p):
      for _ in range(8):
        p = next_sub_block(p)
      return (p,)
    (end,) = tf.while_loop(lambda p: tf.logical_and(p < length, byte(p) > 0),
                           eight, (position,))
    return end + 1

  def record(position, height, width, frames):
    block = _fixed_bytes(encoded, position, 10)
    image, extension = tf.equal(block[0], 0x2C), tf.equal(block[0], 0x21)
    sub_blocks = tf.where(image, position + 11 + colour_table_bytes(block[9]),
                          tf.where(extension, position + 2, length))
    height = tf.where(image, tf.maximum(height, _uint(block, 7, 2, True)), height)
    width = tf.where(image, tf.maximum(width, _uint(block, 5, 2, True)), width)
    return (past_sub_blocks(sub_blocks), height, width,
            frames + tf.cast(image, tf.int64))

  head = _fixed_bytes(encoded, 0, 13)
  _, height, width, frames = tf.while_loop(
      lambda position, *_: position < length, record,
      (13 + colour_table_bytes(head[10]), _uint(head, 8, 2, True),
       _uint(head, 6, 2, True), tf.constant(0, tf.int64)))
  return tf.stack([height, width, tf.maximum(frames, 1)])


def declared_size(encoded: tf.Tensor) -> tf.Tensor:
  """[height, width, frames] as the image's header declares them (int64).

  Read before anything is decoded, so a decompression bomb (a small file that
  declares a huge image) costs nothing: PNG from IHDR (big-endian at bytes
  16..24), GIF from the logical screen and every frame's image descriptor
  (`_gif_size`), BMP from the info header (little-endian int32 at bytes
  18..26, negative height for top-down rows) and JPEG from its SOF marker
  (`tf.image.extract_jpeg_shape`, which fails like the decoder on a JPEG
  without one). Formats `sniff_format` does not recognise: zeros (and
  `decode_rgb` refuses them).
  """
  encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [])
  head = _fixed_bytes(encoded, 0, 26)
  one_frame = tf.ones([1], tf.int64)
  nothing = tf.constant([0, 0, 1], tf.int64)
  png = tf.stack([_uint(head, 20, 4, False), _uint(head, 16, 4, False)])
  bmp = tf.stack([_uint(head, 22, 4, True), _uint(head, 18, 4, True)])
  bmp = tf.abs(tf.where(bmp >= 2**31, bmp - 2**32, bmp))   # signed int32
  is_jpeg = _is_format(encoded, 'jpeg')
  is_gif = _is_format(encoded, 'gif')
  jpeg = tf.cond(
      is_jpeg,
      lambda: tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64),
      lambda: tf.zeros([2], tf.int64))
  gif = tf.cond(is_gif, lambda: _gif_size(encoded), lambda: nothing)
  return tf.where(is_jpeg, tf.concat([jpeg, one_frame], 0), tf.where(
      _is_format(encoded, 'png'), tf.concat([png, one_frame], 0), tf.where(
          is_gif, gif, tf.where(
              _is_format(encoded, 'bmp'), tf.concat([bmp, one_frame], 0), nothing))))


def _check_declared_size(size: tf.Tensor, max_pixels) -> tf.Operation:
  """An assert that fails (InvalidArgumentError) when the header's `size`
  (`declared_size`) exceeds `max_pixels` pixels, naming it and the limit."""
  pixels = size[0] * size[1] * size[2]
  max_pixels = tf.cast(max_pixels, tf.int64)
  message = tf.strings.format(
      'Image too large: its header declares {}x{} pixels (width x height) '
      'x {} frame(s) = {} pixels, more than the limit of {} '
      '(data.max_image_pixels); refused before decoding.',
      [size[1], size[0], size[2], pixels, max_pixels])
  return tf.debugging.Assert(pixels <= max_pixels, [message])


def _check_format(encoded: tf.Tensor) -> tf.Operation:
  """An assert that fails unless `sniff_format` recognises the magic bytes.

  TF's decoder takes any 'GIF8' prefix (and giflib any 'GIF'), so bytes the
  size guard has not recognised, and therefore not sized, never reach it.
  """
  message = tf.where(
      tf.equal(tf.strings.length(encoded), 0), 'Input is empty.', tf.where(
          _starts_with(encoded, b'GIF'),
          'Unsupported GIF version: only GIF87a and GIF89a files are read; '
          'refused before decoding.',
          'Unknown image file format. One of JPEG, PNG, GIF, BMP required.'))
  return tf.debugging.Assert(_is_known_format(encoded), [message])


def _check_bmp_palette(encoded: tf.Tensor) -> tf.Operation:
  """TF decodes an 8-bit BMP as gray levels of its palette *indices*: fine for
  a gray ramp palette, wrong colours otherwise. Such files are refused."""
  is_bmp = _is_format(encoded, 'bmp')
  head = _fixed_bytes(encoded, 0, 54)
  bits = _uint(head, 28, 2, True)
  header_size = _uint(head, 14, 4, True)
  used = _uint(head, 46, 4, True)
  used = tf.where(tf.logical_or(used <= 0, used > 256), tf.constant(256, tf.int64), used)
  palette = tf.reshape(_fixed_bytes(encoded, 14 + header_size, 1024), [256, 4])
  index = tf.range(256, dtype=tf.int64)
  gray_ramp = tf.reduce_all(tf.logical_or(
      index >= used,
      tf.reduce_all(tf.equal(palette[:, :3], index[:, None]), axis=1)))
  ok = tf.logical_or(tf.logical_not(tf.logical_and(is_bmp, tf.equal(bits, 8))),
                     gray_ramp)
  return tf.debugging.Assert(ok, [tf.constant(
      'Unsupported BMP: 8-bit with a colour palette (TensorFlow would decode '
      'the palette indices as gray levels)')])


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
  """The EXIF orientation (1..8, int32) of a JPEG; 1 when there is none.

  Looks for an APP1 segment (FF E1, length) holding 'Exif\\0\\0' in the first
  64 KiB, reads its TIFF header ('II' little- or 'MM' big-endian, 42), IFD0
  and its first entry (among 128) with tag 0x0112, of type SHORT or LONG,
  that lies inside the segment, as PIL does. Any missing or malformed piece
  (truncated segment, garbage offsets, a value outside 1..8) gives 1: never
  an error.
  """
  encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [])
  # A leading byte so that even an empty file splits into one part.
  head = tf.strings.join([b'.', tf.strings.substr(encoded, 0, _EXIF_SEARCH)])
  parts = tf.strings.split(head, sep=b'Exif\x00\x00', maxsplit=1)
  found = tf.size(parts) > 1
  position = tf.cast(tf.strings.length(parts[0]), tf.int64) - 1   # of 'Exif'
  segment = _fixed_bytes(encoded, tf.maximum(position - 4, 0), _EXIF_WINDOW + 10)
  segment_length = segment[2] * 256 + segment[3]   # counts itself, not FF E1
  tiff = segment[10:]
  tiff_length = segment_length - 8                 # minus length and 'Exif\0\0'
  little = tf.logical_and(tf.equal(tiff[0], 0x49), tf.equal(tiff[1], 0x49))
  big = tf.logical_and(tf.equal(tiff[0], 0x4D), tf.equal(tiff[1], 0x4D))
  ifd = _uint(tiff, 4, 4, little)
  count = _uint(tiff, ifd, 2, little)
  entry = ifd + 2 + 12 * tf.range(_EXIF_MAX_ENTRIES, dtype=tf.int64)

  def field(offset, size):
    return _uint(tiff, entry + offset, size, little)

  inside = tf.logical_and(
      tf.range(_EXIF_MAX_ENTRIES, dtype=tf.int64) < count,
      entry + 12 <= tiff_length)
  kind = field(2, 2)        # 3 = SHORT (the standard), 4 = LONG (read by PIL too)
  match = tf.logical_and(inside, tf.logical_and(
      tf.equal(field(0, 2), _ORIENTATION_TAG),
      tf.logical_or(tf.equal(kind, 3), tf.equal(kind, 4))))
  first = tf.argmax(tf.cast(match, tf.int32))
  value = tf.where(tf.equal(tf.gather(kind, first), 3),
                   tf.gather(field(8, 2), first), tf.gather(field(8, 4), first))
  valid = tf.reduce_all(tf.stack([
      found, position >= 4, tf.equal(segment[0], 0xFF), tf.equal(segment[1], 0xE1),
      tf.logical_or(little, big), tf.equal(_uint(tiff, 2, 2, little), 42),
      ifd >= 8, tf.reduce_any(match), value >= 1, value <= 8]))
  return tf.cast(tf.where(valid, value, 1), tf.int32)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """Rotates / flips a decoded [H, W, C] image by its EXIF orientation (1..8),
  exactly as `PIL.ImageOps.exif_transpose`; values outside 1..8 leave it as is."""
  flip_lr = tf.image.flip_left_right
  flip_ud = tf.image.flip_up_down
  transpose = tf.image.transpose
  branches = [
      lambda: image,                                  # 1: upright
      lambda: flip_lr(image),                         # 2: mirrored
      lambda: flip_ud(flip_lr(image)),                # 3: rotated 180
      lambda: flip_ud(image),                         # 4: mirrored vertically
      lambda: transpose(image),                       # 5: transposed
      lambda: flip_lr(transpose(image)),              # 6: rotate 90 clockwise
      lambda: flip_ud(flip_lr(transpose(image))),     # 7: transverse
      lambda: flip_ud(transpose(image)),              # 8: rotate 90 counter-clockwise
  ]
  index = tf.cast(orientation, tf.int32) - 1
  index = tf.where(tf.logical_and(index >= 0, index < 8), index, 0)
  return tf.switch_case(index, branches)


def _jpeg_scale_index(size: tf.Tensor, min_size: int) -> tf.Tensor:
  """Index into JPEG_SCALES of the largest DCT scale that keeps both sides of
  a JPEG of header `size` (`declared_size`) at least `min_size` pixels; 0
  (full size) otherwise."""
  smaller_side = tf.minimum(size[0], size[1])
  fits = [smaller_side >= scale * min_size for scale in JPEG_SCALES[1:]]
  return tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32))


def decode_rgb(encoded: tf.Tensor,
               max_pixels: int = DEFAULT_MAX_PIXELS,
               min_size: int | None = None) -> tf.Tensor:
  """Decodes one encoded image (scalar tf.string) to uint8 RGB [H, W, 3], upright.

  Grayscale is replicated, alpha and palettes are flattened to RGB, and only
  the first frame of an animated GIF is kept, so every format yields the
  same shape of tensor. A JPEG's EXIF orientation is applied. Fails with
  InvalidArgumentError, before allocating anything, when the header declares
  more than `max_pixels` pixels (see `declared_size`), and on anything the
  decoder refuses.

  `min_size`: the image is wanted no smaller than this (both sides). A JPEG
  of at least twice that is then decoded at 1/2 or 1/4 scale by libjpeg's
  DCT scaling (JPEG_SCALES), the largest that keeps both sides >= `min_size`:
  for a 640x480 photo and a 224-px model, 4x fewer pixels to decode and to
  resize. Other formats, and JPEGs too small to scale, decode at full size.
  """
  encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [])
  # The header is read once: the size guard and the JPEG scale.
  return _decode_rgb(encoded, declared_size(encoded), max_pixels, min_size)


def _checks(encoded: tf.Tensor, size: tf.Tensor, max_pixels) -> List[tf.Operation]:
  """What every decode asserts first: a known format, the size guard, no
  colour-palette BMP."""
  return [_check_format(encoded), _check_declared_size(size, max_pixels),
          _check_bmp_palette(encoded)]


def _decode_rgb(encoded: tf.Tensor, size: tf.Tensor, max_pixels,
                min_size: int | None) -> tf.Tensor:
  """decode_rgb, with the header's `size` (`declared_size`) already read."""
  checks = _checks(encoded, size, max_pixels)
  is_jpeg = _is_format(encoded, 'jpeg')

  def full_size():
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)

  def scaled_jpeg():
    return tf.switch_case(_jpeg_scale_index(size, min_size), [full_size] + [
        functools.partial(tf.io.decode_jpeg, encoded, channels=3, ratio=scale)
        for scale in JPEG_SCALES[1:]])

  with tf.control_dependencies(checks):
    if min_size is None:
      image = full_size()
    else:
      image = tf.cond(is_jpeg, scaled_jpeg, full_size)
  image.set_shape([None, None, 3])
  orientation = tf.cond(is_jpeg, lambda: exif_orientation(encoded),
                        lambda: tf.constant(1, tf.int32))
  image = apply_orientation(image, orientation)
  image.set_shape([None, None, 3])
  return image


def ingest_check(encoded: tf.Tensor,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[tf.Tensor, tf.Tensor]:
  """(the header's [height, width, frames] (`declared_size`), the upright
  [height, width] `decode_rgb` gives the image) for ingest, which must prove
  every image decodable but keeps no pixels. [-1, -1] when the header
  declares more than `max_pixels`: nothing is decoded then.

  A JPEG is decoded at 1/8 scale, libjpeg's cheapest: every coefficient is
  still entropy-decoded, so corrupt or truncated data fails as in a full
  decode, and only the inverse DCT is smaller (1.6 against 3.3 ms for a
  640x480 photo). Its size is then its header's, upright after its EXIF
  orientation, which is what `decode_rgb` gives. Other formats decode whole.
  """
  encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [])
  size = declared_size(encoded)

  def jpeg() -> tf.Tensor:
    with tf.control_dependencies(_checks(encoded, size, max_pixels)):
      scaled = tf.cast(tf.shape(tf.io.decode_jpeg(encoded, channels=3, ratio=8))[:2],
                       tf.int64)
    # An assert on the decoded shape, so the decode runs (an op whose output
    # nothing reads would be pruned) and the header's size is the decoder's.
    matches = tf.debugging.assert_equal(scaled, (size[:2] + 7) // 8, message=(
        'JPEG decoded to another size than its header declares'))
    with tf.control_dependencies([matches]):
      turned = exif_orientation(encoded) >= 5       # transposed (5..8)
      return tf.where(turned, tf.stack([size[1], size[0]]), size[:2])

  def any_format() -> tf.Tensor:
    return tf.cast(tf.shape(_decode_rgb(encoded, size, max_pixels, None))[:2], tf.int64)

  too_large = size[0] * size[1] * size[2] > tf.cast(max_pixels, tf.int64)
  return size, tf.cond(too_large, lambda: tf.constant([-1, -1], tf.int64),
                       lambda: tf.cond(_is_format(encoded, 'jpeg'), jpeg, any_format))


def decode_and_resize(encoded: tf.Tensor, image_size: int,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
  """Decodes a batch of encoded images [B] to float32 RGB [B, S, S, 3] in [0, 255].

  Images of any size and format may share a batch; each is resized on its own
  (antialiased), large JPEGs from a DCT-scaled decode (`decode_rgb`'s
  `min_size`). `max_pixels`: the decompression-bomb limit of `decode_rgb`.
  """
  def one(image_bytes):
    image = tf.cast(decode_rgb(image_bytes, max_pixels, min_size=image_size),
                    tf.float32)
    return tf.image.resize(image, [image_size, image_size], antialias=True)

  return tf.map_fn(
      one, encoded,
      fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


@functools.lru_cache(maxsize=None)
def batch_decoder(image_size: int) -> tf.types.experimental.GenericFunction:
  """`decode_and_resize` of a batch [B] of encoded images at `image_size`, as
  one graph traced once per size: run eagerly, op by op, the decoder costs
  about 30x more per image (0.12 against 0.004 s)."""
  return tf.function(lambda encoded: decode_and_resize(encoded, image_size),
                     autograph=False,
                     input_signature=[tf.TensorSpec([None], tf.string)])


def error_text(error: Exception) -> str:
  """The decoder's own words ('Input is empty.', 'Image too large: ...') from a
  TensorFlow error, eager or graph, without node names, op traces or stacks."""
  text = str(getattr(error, 'message', error))
  # Graph errors read 'Graph execution error:', 'Detected at node ...', an
  # indented stack, then the message: its last unindented line.
  lines = [line for line in text.split('\n')
           if line.strip() and not line[0].isspace()
           and not line.startswith(('Graph execution error', 'Detected at node',
                                    '<stack traces'))]
  text = re.sub(r'^\{\{[^}]*\}\}\s*', '', lines[-1] if lines else text)
  text = text.split(' [[')[0].split(' [Op:')[0].strip()
  for marker in ('assertion failed: [', "Summarized data: b'", 'Summarized data: '):
    if marker in text:
      text = text.split(marker, 1)[1]
      break
  return text.rstrip("]'")
