"""TensorFlow Lite exports of a SavedModel, for edge consumers of the registry.

TFLite cannot run `tf.io.decode_image`, so every export is the `from_pixels`
signature, not `serving_default`: input `pixels`, [N, S, S, 3] RGB in [0, 255],
already resized to S x S (the backbone's normalization is inside the model);
output `probabilities`, float32 [N, C], in `labels.txt` order. Three kinds:

- `model.tflite`: float32 weights, no quantization: the scores agree with
  `serving_default`'s;
- `model_dynamic_range.tflite`: int8 weights, float32 activations and input;
- `model_int8.tflite`: int8 weights and activations, calibrated on
  representative pixels; uint8 input (what a camera gives), whose scale and
  zero point a consumer reads from the input's quantization parameters.

Which quantized exports a version publishes is decided in `edge_exports`.
"""

import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models import signatures

TFLITE_FILE = 'model.tflite'
FLOAT, DYNAMIC_RANGE, INT8 = 'float', 'dynamic_range', 'int8'
FILES = {FLOAT: TFLITE_FILE, DYNAMIC_RANGE: 'model_dynamic_range.tflite',
         INT8: 'model_int8.tflite'}
PROBABILITIES = 'probabilities'
# Ops that move values between float and integer: not float compute.
_CONVERSION_OPS = {'QUANTIZE', 'DEQUANTIZE'}


def has_pixels_signature(saved_model_dir: str) -> bool:
  """Whether the SavedModel exports `from_pixels` (read from saved_model.pb)."""
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(saved_model_dir, 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  return any(signatures.PIXELS_SIGNATURE in meta_graph.signature_def
             for meta_graph in saved_model.meta_graphs)


class Converter:
  """One SavedModel's `from_pixels` signature, converted to TFLite flatbuffers
  of every kind (FILES) by one TFLite converter: each converter loads the
  SavedModel when made (`tf.saved_model.load`, seconds), so one per kind
  loaded it three times. Each call sets every setting in which the kinds
  differ, so it gives a fresh converter's bytes."""

  def __init__(self, saved_model_dir: str):
    self._converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[signatures.PIXELS_SIGNATURE])

  def __call__(self, kind: str = FLOAT,
               representative_pixels: Optional[np.ndarray] = None) -> bytes:
    """The flatbuffer of `kind`; INT8 needs `representative_pixels`
    [N, S, S, 3] float RGB to calibrate on."""
    converter = self._converter
    converter.optimizations = set() if kind == FLOAT else {tf.lite.Optimize.DEFAULT}
    int8 = kind == INT8
    converter.representative_dataset = (lambda: (
        {signatures.PIXELS_INPUT: image[np.newaxis]} for image in representative_pixels)
    ) if int8 else None
    converter.target_spec.supported_ops = {
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if int8 else tf.lite.OpsSet.TFLITE_BUILTINS}
    converter.inference_input_type = tf.uint8 if int8 else tf.float32
    return converter.convert()


def quantized_input(pixels: np.ndarray, details: Dict) -> np.ndarray:
  """Float RGB pixels in the dtype of the input `details` (a signature
  runner's): as they are for a float input, else q = round(p / scale) + zero
  point, clipped to the integer type."""
  dtype = details['dtype']
  if dtype == np.float32:
    return pixels.astype(np.float32)
  scale, zero_point = details['quantization']
  bounds = np.iinfo(dtype)
  return np.clip(np.round(pixels / scale) + zero_point, bounds.min, bounds.max).astype(dtype)


class Classifier:
  """A TFLite model's `from_pixels` signature: float pixels in (quantized for
  the model when its input is integer), `probabilities` out, looked up by name
  (the signature may have other outputs)."""

  def __init__(self, model: bytes, num_threads: Optional[int] = None):
    self._runner = tf.lite.Interpreter(
        model_content=model, num_threads=num_threads).get_signature_runner(
            signatures.PIXELS_SIGNATURE)
    self.input_details = self._runner.get_input_details()[signatures.PIXELS_INPUT]
    self.image_size = int(self.input_details['shape_signature'][1])

  def __call__(self, pixels: np.ndarray) -> np.ndarray:
    return self._runner(**{signatures.PIXELS_INPUT: quantized_input(
        pixels, self.input_details)})[PROBABILITIES]


def float_ops(model: bytes) -> List[str]:
  """The names of the model's ops that compute in float32 (reading a float32
  tensor), quantize and dequantize aside: none in a fully integer model.
  Read without TFLite's default delegate, which would replace the ops."""
  interpreter = tf.lite.Interpreter(
      model_content=model, experimental_op_resolver_type=(
          tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
  dtypes = {tensor['index']: tensor['dtype'] for tensor in interpreter.get_tensor_details()}
  return sorted({op['op_name'] for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                 if op['op_name'] not in _CONVERSION_OPS and
                 any(dtypes.get(index) == np.float32 for index in op['inputs'])})
