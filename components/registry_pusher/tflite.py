"""TensorFlow Lite export of a SavedModel, for edge consumers of the registry.

TFLite cannot run `tf.io.decode_image`, so the export is the `from_pixels`
signature, not `serving_default`: input `pixels`, float32 [N, S, S, 3], RGB in
[0, 255], already resized to S x S (the backbone's normalization is inside the
model); output `probabilities`, float32 [N, C], in `labels.txt` order. Float32
weights, no quantization: the scores agree with `serving_default`'s.
"""

import logging
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from components.trainer import signatures

TFLITE_FILE = 'model.tflite'


def has_pixels_signature(saved_model_dir: str) -> bool:
  """Whether the SavedModel exports `from_pixels` (read from saved_model.pb)."""
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(saved_model_dir, 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  return any(signatures.PIXELS_SIGNATURE in meta_graph.signature_def
             for meta_graph in saved_model.meta_graphs)


def convert(saved_model_dir: str) -> bytes:
  """The `from_pixels` signature as a TFLite flatbuffer."""
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=[signatures.PIXELS_SIGNATURE])
  return converter.convert()


def export(saved_model_dir: str, directory: str) -> str | None:
  """Writes `model.tflite` into the local `directory`; returns its path, or None
  for a SavedModel without `from_pixels` (exported before it existed)."""
  if not has_pixels_signature(saved_model_dir):
    logging.warning('%s has no %r signature: no %s for it.', saved_model_dir,
                    signatures.PIXELS_SIGNATURE, TFLITE_FILE)
    return None
  path = os.path.join(directory, TFLITE_FILE)
  with open(path, 'wb') as f:
    f.write(convert(saved_model_dir))
  return path
