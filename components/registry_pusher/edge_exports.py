"""The TFLite models a version publishes for devices, each scored on eval
images before it is published (docs/serving.md#quantized-models-for-devices).

The float `model.tflite` is always published. The dynamic-range and int8
exports are published only when their eval accuracy is at most
`export.max_quantized_drop` below the SavedModel's, on the same decoded
pixels of up to `export.score_images` eval images; otherwise the record says
why they are missing. The int8 model is calibrated on up to
`export.representative_images` train images. Both samples take the classes
in turn and are decoded and resized as Transform does; a cap, because every
model scores every sampled image on the pusher's one process (4,000 eval
images at 20,000 photos took minutes).
"""

import collections
import itertools
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from components import example_splits
from components.contracts import EVAL_SPLIT, IMAGE_FEATURE, LABEL_FEATURE, TRAIN_SPLIT
from components.registry_pusher import tflite
from models import image_codec
from models import signatures

# Eval images decoded and scored at once by every model.
_BATCH_SIZE = 32
_SPEC = {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string),
         LABEL_FEATURE: tf.io.FixedLenFeature([], tf.string)}
# Accuracies are counts over the same images: equal ones may differ in the
# last float bit.
_TOLERANCE = 1e-9


def _classes_in_turn(examples_uri: str, split: str, count: int) -> np.ndarray:
  """Which examples of `split`, by file-order position, are among the first
  `count` taken class by class in turn: the first example of each class,
  then the second, ... (a boolean per example of the split)."""
  by_class: Dict[bytes, List[int]] = collections.defaultdict(list)
  size = 0
  for names in example_splits.string_values(examples_uri, split, LABEL_FEATURE):
    for name in names:
      by_class[name].append(size)
      size += 1
  in_turn = [index for turn in itertools.zip_longest(*by_class.values())
             for index in turn if index is not None]
  chosen = np.zeros(size, dtype=bool)
  chosen[in_turn[:count]] = True
  return chosen


def _parse(records: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  parsed = tf.io.parse_example(records, _SPEC)
  return parsed[IMAGE_FEATURE], parsed[LABEL_FEATURE]


def sampled_batches(examples_uri: str, split: str, count: int
                    ) -> Tuple[int, int, Iterator[Tuple[np.ndarray, np.ndarray]]]:
  """(how many examples are sampled, the split's size, their (encoded images,
  labels) _BATCH_SIZE at a time in file order).

  Up to `count` examples, classes in turn (`_classes_in_turn`): every class
  is in the sample, and a run over the same examples takes the same ones.
  Only those examples are parsed."""
  chosen = _classes_in_turn(examples_uri, split, count)
  sampled = tf.constant(chosen)
  batches = (example_splits.split_records(examples_uri, split)
             .enumerate()
             .filter(lambda position, _: sampled[position])
             .map(lambda _, record: record)
             .batch(_BATCH_SIZE)
             .map(_parse))
  return int(chosen.sum()), len(chosen), batches.as_numpy_iterator()


def representative_pixels(examples_uri: str, count: int, image_size: int) -> np.ndarray:
  """Up to `count` train images (`sampled_batches`) as float RGB [N, S, S, 3]."""
  sampled, _, batches = sampled_batches(examples_uri, TRAIN_SPLIT, count)
  if not sampled:
    raise ValueError(f'No train images in {examples_uri} to calibrate the int8 model on')
  images = np.concatenate([images for images, _ in batches])
  return image_codec.batch_decoder(image_size)(tf.constant(images)).numpy()


def eval_accuracies(saved_model_dir: str, models: Dict[str, bytes], examples_uri: str,
                    class_names: Sequence[str], image_size: int, score_images: int
                    ) -> Tuple[int, int, float, Dict[str, float]]:
  """(eval images scored, the eval split's size, the SavedModel's
  `from_pixels` accuracy, each TFLite model's accuracy by name), all on the
  same decoded pixels of up to `score_images` eval images (`sampled_batches`)."""
  classifiers = {name: tflite.Classifier(model) for name, model in models.items()}
  class_ids = {name.encode('utf-8'): i for i, name in enumerate(class_names)}
  correct = dict.fromkeys([*models, None], 0)       # None: the SavedModel
  scored, size, batches = sampled_batches(examples_uri, EVAL_SPLIT, score_images)
  if not scored:
    raise ValueError(f'No eval images in {examples_uri}')
  decode = image_codec.batch_decoder(image_size)
  with signatures.session_function(saved_model_dir, signatures.PIXELS_SIGNATURE) as saved:
    for images, names in batches:
      truth = np.array([class_ids.get(name, -1) for name in names])
      pixels = decode(tf.constant(images)).numpy()
      predictions = {None: saved(pixels)[tflite.PROBABILITIES]}
      predictions.update((name, classify(pixels)) for name, classify in classifiers.items())
      for name, probabilities in predictions.items():
        correct[name] += int(np.sum(probabilities.argmax(axis=1) == truth))
  return scored, size, correct.pop(None) / scored, {
      name: count / scored for name, count in correct.items()}


def verdict(drop: float, max_drop: float) -> Tuple[bool, str]:
  """Whether a quantized export that loses `drop` accuracy (a fraction; negative:
  it gains) against the SavedModel is published, and why."""
  if drop > max_drop + _TOLERANCE:
    return False, (f'loses {drop * 100:.2f} accuracy points against the SavedModel on '
                   f'the eval split, more than export.max_quantized_drop = {max_drop:g}')
  return True, f'within export.max_quantized_drop = {max_drop:g}'


def _timed_convert(converter: tflite.Converter, kind: str,
                   representative: Optional[np.ndarray] = None) -> Tuple[bytes, float]:
  logging.info('Edge exports: converting to %s%s ...', tflite.FILES[kind],
               '' if representative is None else
               f', calibrated on {len(representative)} train images')
  start = time.monotonic()
  model = converter(kind, representative)
  seconds = time.monotonic() - start
  logging.info('Edge exports: %s converted in %.1f s, %d bytes', tflite.FILES[kind],
               seconds, len(model))
  return model, seconds


def convert_all(saved_model_dir: str, examples_uri: str, representative_images: int
                ) -> Tuple[Dict[str, bytes], Dict[str, float], int]:
  """(every kind of TFLite model of the SavedModel, the seconds each took to
  convert, the image size they take); the int8 one calibrated on
  `representative_images` train images of `examples_uri`. The SavedModel's
  load is counted in the float model's seconds."""
  models, seconds = {}, {}
  start = time.monotonic()
  logging.info('Edge exports: loading %s ...', saved_model_dir)
  converter = tflite.Converter(saved_model_dir)
  loaded_seconds = time.monotonic() - start
  models[tflite.FLOAT], seconds[tflite.FLOAT] = _timed_convert(converter, tflite.FLOAT)
  seconds[tflite.FLOAT] += loaded_seconds
  image_size = tflite.Classifier(models[tflite.FLOAT]).image_size
  models[tflite.DYNAMIC_RANGE], seconds[tflite.DYNAMIC_RANGE] = _timed_convert(
      converter, tflite.DYNAMIC_RANGE)
  models[tflite.INT8], seconds[tflite.INT8] = _timed_convert(
      converter, tflite.INT8,
      representative_pixels(examples_uri, representative_images, image_size))
  return models, seconds, image_size


def export(saved_model_dir: str, examples_uri: str, class_names: Sequence[str],
           directory: str, max_drop: float, representative_images: int,
           score_images: int) -> Tuple[List[str], Optional[Dict[str, Any]]]:
  """Converts, scores and writes the TFLite models into the local `directory`.

  Returns the paths to publish (the float model, and the quantized ones within
  `max_drop`) and the record of every export (`exports` in model_record.json);
  ([], None) for a SavedModel without `from_pixels` (exported before it existed).
  """
  if not tflite.has_pixels_signature(saved_model_dir):
    logging.warning('%s has no %r signature: no TFLite models for it.', saved_model_dir,
                    signatures.PIXELS_SIGNATURE)
    return [], None
  models, seconds, image_size = convert_all(saved_model_dir, examples_uri,
                                            representative_images)
  start = time.monotonic()
  eval_images, eval_split_images, reference, accuracies = eval_accuracies(
      saved_model_dir, models, examples_uri, class_names, image_size, score_images)
  logging.info('Edge exports: scored on %d of %d eval images in %.1f s: SavedModel %.4f, %s',
               eval_images, eval_split_images, time.monotonic() - start, reference,
               ', '.join(f'{tflite.FILES[kind]} {accuracy:.4f}'
                         for kind, accuracy in accuracies.items()))
  paths, exported = [], {}
  for kind, model in models.items():
    drop = reference - accuracies[kind]
    published, reason = (True, 'the float model is always published') if (
        kind == tflite.FLOAT) else verdict(drop, max_drop)
    name = tflite.FILES[kind]
    float_ops = tflite.float_ops(model) if kind == tflite.INT8 else None
    if float_ops:
      logging.info('Edge exports: %s computes these ops in float32: %s', name,
                   ', '.join(float_ops))
    exported[name] = {
        'kind': kind, 'bytes': len(model), 'accuracy': accuracies[kind], 'drop': drop,
        'published': published, 'reason': reason,
        'convert_seconds': round(seconds[kind], 1), 'float_ops': float_ops,
    }
    if published:
      paths.append(os.path.join(directory, name))
      with open(paths[-1], 'wb') as f:
        f.write(model)
    else:
      logging.warning('Edge exports: %s is not published: it %s', name, reason)
  return paths, {
      'eval_images': eval_images, 'eval_split_images': eval_split_images,
      'saved_model_accuracy': reference, 'max_quantized_drop': max_drop,
      'representative_images': representative_images, 'score_images': score_images,
      'image_size': image_size, 'models': exported,
  }
