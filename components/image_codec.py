"""The one image decoder used at ingest, in Transform and at serving time.

Ingest judges decodability with exactly the function the transform graph runs,
so an image accepted by ExampleGen can never fail later in Transform, the
Trainer, the Evaluator or a serving request.
"""

import tensorflow as tf

# Formats TensorFlow's decoder reads, by their leading magic bytes.
_MAGIC_BYTES = (
    (b'\xff\xd8\xff', 'jpeg'),
    (b'\x89PNG\r\n\x1a\n', 'png'),
    (b'GIF87a', 'gif'),
    (b'GIF89a', 'gif'),
    (b'BM', 'bmp'),
)
SUPPORTED_FORMATS = ('jpeg', 'png', 'gif', 'bmp')


def sniff_format(encoded: bytes) -> str | None:
  """The image format named by the file's magic bytes, or None if unsupported."""
  for magic, name in _MAGIC_BYTES:
    if encoded.startswith(magic):
      return name
  return None


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
  """Decodes one encoded image (scalar tf.string) to uint8 RGB [H, W, 3].

  Grayscale is replicated, alpha and palettes are flattened to RGB, and only
  the first frame of an animated GIF is kept, so every format yields the
  same shape of tensor.
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """Decodes a batch of encoded images [B] to float32 RGB [B, S, S, 3] in [0, 255].

  Images of any size and format may share a batch; each is resized on its own.
  """
  def one(image_bytes):
    image = tf.cast(decode_rgb(image_bytes), tf.float32)
    return tf.image.resize(image, [image_size, image_size], antialias=True)

  return tf.map_fn(
      one, encoded,
      fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))
