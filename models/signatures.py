"""The exported model's signatures, each wrapping the same transform graph.

- `serving_default`: a batch of encoded image bytes -> probabilities, top class
  id and top class name, and (with the unknown-image detector, ood.py)
  `ood_score`, `unknown` and `prediction`: the class name, or "unknown" for an
  image of no known class. What TF Serving, batch jobs and the CLI call.
- `from_examples`: serialized raw tf.Examples -> the same, plus `all_classes`,
  which TFMA uses to map string labels to class ids.
- `transform_features`: serialized raw tf.Examples -> transformed features.
- `from_pixels`: decoded, resized RGB pixels -> probabilities (and `ood_score`,
  `unknown`); the same model without the decoder, for runtimes that cannot decode images in the graph
  (the RegistryPusher converts this one to TensorFlow Lite).
- `embeddings_from_examples`: serialized raw tf.Examples -> the pooled backbone
  features (`embedding`) and probabilities; the LabelQueue ranks unlabeled
  images with both (uncertainty, and diversity in feature space).
- `explain_pixels`: the pixels `from_pixels` takes -> Grad-CAM `heatmap`
  [N, h, w] of the top class, `probabilities`, `class_id` (explain.py).

The signatures that run the model do it MAX_IMAGES_AT_ONCE images at a time,
so a caller's batch of any size costs the memory of one such chunk.
"""

import contextlib
import functools
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from models import explain
from models import ood
from models import preprocessing
from models.classifier import NORMALIZATION_LAYER, POOLED_FEATURES_LAYER

SERVING_SIGNATURE = 'serving_default'
EXAMPLES_SIGNATURE = 'from_examples'
TRANSFORM_SIGNATURE = 'transform_features'
PIXELS_SIGNATURE = 'from_pixels'
EMBEDDINGS_SIGNATURE = 'embeddings_from_examples'
EXPLAIN_SIGNATURE = 'explain_pixels'
SERVING_INPUT = 'images'
PIXELS_INPUT = 'pixels'


# The most images a signature runs through the model at once. A caller's
# batch (TFMA sends up to 1,000 examples, a batch job or a TF Serving client
# anything) is cut into chunks of this size: one call over 1,000 640x480
# photos at 224 px peaked at 11.9 GB of memory, 1.6 GB over 64.
MAX_IMAGES_AT_ONCE = 32


def _in_chunks(fn: Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]],
               inputs: Dict[str, tf.Tensor],
               output_specs: Dict[str, tf.TensorSpec]) -> Dict[str, tf.Tensor]:
  """`fn` over `inputs` (tensors of one batch size) MAX_IMAGES_AT_ONCE rows at
  a time, one chunk after the other; its outputs concatenated. An empty
  batch gives empty outputs without calling `fn` (the backbone would fail on
  it with a misleading shape error)."""
  total = tf.shape(next(iter(inputs.values())))[0]
  chunks = (total + MAX_IMAGES_AT_ONCE - 1) // MAX_IMAGES_AT_ONCE
  arrays = {name: tf.TensorArray(spec.dtype, size=chunks, infer_shape=False,
                                 element_shape=spec.shape)
            for name, spec in output_specs.items()}

  def one_chunk(index, arrays):
    start = index * MAX_IMAGES_AT_ONCE
    outputs = fn({name: value[start:start + MAX_IMAGES_AT_ONCE]
                  for name, value in inputs.items()})
    return index + 1, {name: array.write(index, outputs[name])
                       for name, array in arrays.items()}

  _, arrays = tf.while_loop(lambda index, _: index < chunks, one_chunk,
                            (tf.constant(0), arrays), parallel_iterations=1)
  return {name: array.concat() for name, array in arrays.items()}


class _Scorer:
  """Model inputs -> probabilities and, with an ood.UnknownScore, the
  unknown-image score and decision, from one pass through the model."""

  def __init__(self, model: tf_keras.Model, unknown: Optional[ood.UnknownScore]):
    self.unknown = unknown
    self._model = model if unknown is None else tf_keras.Model(
        model.inputs, [model.get_layer(NORMALIZATION_LAYER).output, model.output])

  def output_specs(self, num_classes: int) -> Dict[str, tf.TensorSpec]:
    specs = {'probabilities': tf.TensorSpec([None, num_classes], tf.float32)}
    if self.unknown is not None:
      specs.update(ood_score=tf.TensorSpec([None], tf.float32),
                   unknown=tf.TensorSpec([None], tf.bool))
    return specs

  def __call__(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    if self.unknown is None:
      return {'probabilities': self._model(images, training=False)}
    features, probabilities = self._model(images, training=False)
    score, unknown = self.unknown(features)
    return {'probabilities': probabilities, 'ood_score': score, 'unknown': unknown}


def _predictions(model: tf_keras.Model, scorer: _Scorer, class_names: tf.Tensor,
                 raw_features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Probabilities, top class id and name, in chunks (`_in_chunks`); with
  the unknown-image detector also `ood_score`, `unknown` and `prediction`,
  the class name or ood.UNKNOWN."""
  def predict(raw_chunk):
    transformed = model.tft_layer(raw_chunk)
    outputs = scorer(transformed[preprocessing.TRANSFORMED_IMAGE_KEY])
    outputs['class_id'] = tf.argmax(outputs['probabilities'], axis=-1)
    outputs['class_name'] = tf.gather(class_names, outputs['class_id'])
    if scorer.unknown is not None:
      outputs['prediction'] = tf.where(outputs['unknown'], ood.UNKNOWN,
                                       outputs['class_name'])
    return outputs

  specs = scorer.output_specs(class_names.shape[0])
  specs.update(class_id=tf.TensorSpec([None], tf.int64),
               class_name=tf.TensorSpec([None], tf.string))
  if scorer.unknown is not None:
    specs['prediction'] = tf.TensorSpec([None], tf.string)
  return _in_chunks(predict, raw_features, specs)


def _make_signatures(
    model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput,
    class_names: List[str],
    normalize: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    unknown: Optional[ood.UnknownScore] = None,
) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """Builds the signatures; `model.tft_layer` must already be attached.

  `normalize` is the backbone's (the one Transform ran); with it, `from_pixels`
  and `explain_pixels` are exported too. With `unknown`, the signatures that
  classify also say whether an image is of no known class (ood.py).
  """
  # No autograph: the graphs are plain TensorFlow ops (tf.cond where they
  # branch), and converting the Keras layers' code took ~15 s of an export.
  signature = functools.partial(tf.function, autograph=False)
  names = tf.constant(class_names)
  scorer = _Scorer(model, unknown)
  raw_spec = tf_transform_output.raw_feature_spec()
  unlabeled_spec = {preprocessing.IMAGE_KEY: raw_spec[preprocessing.IMAGE_KEY]}

  @signature(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
  def serve_images(images):
    return _predictions(model, scorer, names,
                        {preprocessing.IMAGE_KEY: tf.reshape(images, [-1, 1])})

  @signature(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(examples):
    features = tf.io.parse_example(examples, unlabeled_spec)
    outputs = _predictions(model, scorer, names, features)
    outputs['all_classes'] = tf.tile(names[tf.newaxis], [tf.shape(examples)[0], 1])
    return outputs

  @signature(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def transform_features(examples):
    return model.tft_layer(tf.io.parse_example(examples, raw_spec))

  embed = tf_keras.Model(model.inputs, [model.get_layer(POOLED_FEATURES_LAYER).output,
                                        model.output])

  def embed_chunk(raw_chunk):
    transformed = model.tft_layer(raw_chunk)
    embedding, probabilities = embed(
        transformed[preprocessing.TRANSFORMED_IMAGE_KEY], training=False)
    return {'embedding': embedding, 'probabilities': probabilities}

  @signature(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def embed_examples(examples):
    return _in_chunks(embed_chunk, tf.io.parse_example(examples, unlabeled_spec), {
        'embedding': tf.TensorSpec(embed.outputs[0].shape, tf.float32),
        'probabilities': tf.TensorSpec(embed.outputs[1].shape, tf.float32),
    })

  exported = {
      SERVING_SIGNATURE: serve_images.get_concrete_function(),
      EXAMPLES_SIGNATURE: serve_examples.get_concrete_function(),
      TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
      EMBEDDINGS_SIGNATURE: embed_examples.get_concrete_function(),
  }
  if normalize is not None:
    # Float RGB in [0, 255], resized to the model's input like Transform does
    # (image_codec.decode_and_resize); normalization stays inside the model.
    size = model.input_shape[1]

    @signature(input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name=PIXELS_INPUT)])
    def serve_pixels(pixels):
      return scorer(normalize(pixels))

    exported[PIXELS_SIGNATURE] = serve_pixels.get_concrete_function()
    explain_chunk = explain.grad_cam(model, normalize)

    @signature(input_signature=serve_pixels.input_signature)
    def explain_pixels(pixels):
      return _in_chunks(lambda chunk: explain_chunk(chunk[PIXELS_INPUT]),
                        {PIXELS_INPUT: pixels}, explain.output_specs(model))

    exported[EXPLAIN_SIGNATURE] = explain_pixels.get_concrete_function()
  return exported


def export(model: tf_keras.Model, serving_model_dir: str,
           tf_transform_output: tft.TFTransformOutput, class_names: List[str],
           normalize: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
           unknown: Optional[ood.UnknownScore] = None) -> None:
  """Saves `model` as a SavedModel with the signatures (see _make_signatures)."""
  if unknown is not None:
    model.unknown_score = unknown   # tracked by the model, so its weights are saved
  # Consumers call the signatures (TF Serving, TFMA, the CLI, TFLite); no one
  # reloads the Keras object, so its per-layer traces, ~25 of the ~30 s of an
  # export, are not saved.
  model.save(serving_model_dir, save_format='tf', save_traces=False,
             signatures=_make_signatures(model, tf_transform_output, class_names,
                                        normalize, unknown))


class SessionModel:
  """A SavedModel imported into a TF1 session (`loaded_session`), whose
  signatures are taken as functions: serialized examples or pixels -> the
  signature's outputs as numpy arrays."""

  def __init__(self, saved_model_dir: str, session: tf.compat.v1.Session,
               meta_graph: tf.compat.v1.MetaGraphDef):
    self._saved_model_dir = saved_model_dir
    self._session = session
    self._meta_graph = meta_graph

  def function(self, signature_name: str) -> Callable[[Any], Dict[str, np.ndarray]]:
    # The protobuf map would hand back an empty signature for a missing name.
    if signature_name not in self._meta_graph.signature_def:
      raise KeyError(f'{self._saved_model_dir} has no {signature_name!r} signature')
    signature = self._meta_graph.signature_def[signature_name]
    (input_name,) = [tensor.name for tensor in signature.inputs.values()]
    fetches = {key: tensor.name for key, tensor in signature.outputs.items()}
    return lambda inputs: self._session.run(fetches, {input_name: inputs})


@contextlib.contextmanager
def loaded_session(saved_model_dir: str):
  """A `SessionModel`: the SavedModel loaded once for all the signatures a
  caller runs (the report scores with one and explains with another).

  Imports the signatures' graph into a TF1 session, about 3x faster to load
  than `tf.saved_model.load` for batch scoring (the report, the LabelQueue).
  """
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph)
  try:
    with graph.as_default():
      meta_graph = tf.compat.v1.saved_model.load(
          session, [tf.saved_model.SERVING], saved_model_dir)
    yield SessionModel(saved_model_dir, session, meta_graph)
  finally:
    session.close()


@contextlib.contextmanager
def session_function(saved_model_dir: str, signature_name: str):
  """One signature of a `loaded_session`, as a function."""
  with loaded_session(saved_model_dir) as model:
    yield model.function(signature_name)
