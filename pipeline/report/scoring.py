"""Scores an examples split with the candidate model, for the report's gallery.

The model's `from_examples` signature takes the raw tf.Examples ImageExampleGen
wrote (what the Evaluator feeds it), so the predictions are the ones TFMA
measured. Only the most confident mistakes are kept, with their image bytes,
and the first image of each class the model got right; `explain` adds their
Grad-CAM heatmaps (the model's `explain_pixels` signature).

The SavedModel is loaded into a graph and session (the TF1 loader): that only
imports the signatures' graph, about 3x faster than `tf.saved_model.load`,
which rebuilds every Keras object of the model.
"""

import dataclasses
import heapq
from typing import List, Optional

import numpy as np
import tensorflow as tf

from components.contracts import SOURCE_PATH_FEATURE
from models import explain as explain_lib
from models import image_codec
from models import preprocessing
from models import signatures

# Scoring stops after this many examples (the gallery then says so).
MAX_EXAMPLES = 10_000
# Classes whose first right eval image is kept (the first ones in id order).
MAX_CLASS_SAMPLES = 12
_BATCH_SIZE = 32


@dataclasses.dataclass
class ScoredImage:
  """An eval image the report shows, with the model's answer."""
  true_label: str
  predicted: str
  probability: float     # the model's probability of `predicted`
  source_path: str       # as ingested, relative to the data folder
  image: bytes           # the encoded image
  heatmap: Optional[np.ndarray] = None   # Grad-CAM of `predicted`, [h, w] in [0, 1]


@dataclasses.dataclass
class Scoring:
  examples: int                   # examples scored
  correct: int
  confusion_matrix: List[List[int]]   # [true class id][predicted class id]
  mistakes: List[ScoredImage]     # the most confident first
  # Of the examples whose label is one of the model's classes, in order:
  probabilities: np.ndarray       # [n, classes], for the calibration error
  label_ids: np.ndarray           # [n] true class ids
  unknown: Optional[np.ndarray]   # [n] bool; None: a model without the detector
  truncated: bool = False         # True when MAX_EXAMPLES stopped the scoring
  # The first eval image the model got right of each of the first
  # MAX_CLASS_SAMPLES classes, in class id order.
  class_samples: List[ScoredImage] = dataclasses.field(default_factory=list)

  @property
  def accuracy(self) -> Optional[float]:
    return self.correct / self.examples if self.examples else None


def feature_value(example: tf.train.Example, name: str) -> str:
  values = example.features.feature[name].bytes_list.value
  return values[0].decode('utf-8') if values else ''


def score_split(model: signatures.SessionModel, files: List[str], class_names: List[str],
                top_n: int = 12, max_examples: int = MAX_EXAMPLES) -> Scoring:
  """Predicts every example in `files` (GZIP TFRecords of raw tf.Examples)."""
  if not files:
    raise ValueError('no example files to score')
  predict = model.function(signatures.EXAMPLES_SIGNATURE)
  class_ids = {name: i for i, name in enumerate(class_names)}
  matrix = [[0] * len(class_names) for _ in class_names]
  heap: List[tuple] = []          # (probability, order, ScoredImage): the top_n kept
  samples = {}                    # class name -> its first right ScoredImage
  scored = correct = 0
  known_rows, label_ids, unknown = [], [], []
  has_detector = False
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP').take(
      max_examples).batch(_BATCH_SIZE)
  for batch in dataset:
    serialized_batch = batch.numpy()
    outputs = predict(serialized_batch)
    probabilities = outputs['probabilities']
    predicted_ids = np.argmax(probabilities, axis=-1)
    model_classes = [name.decode('utf-8') for name in outputs['all_classes'][0]]
    flags = outputs.get('unknown')
    has_detector = flags is not None
    for row, (serialized, probs, predicted_id) in enumerate(
        zip(serialized_batch, probabilities, predicted_ids)):
      example = tf.train.Example.FromString(serialized)
      true_label = feature_value(example, preprocessing.LABEL_KEY)
      predicted = model_classes[predicted_id]
      scored += 1
      if true_label in class_ids:
        known_rows.append(probs)
        label_ids.append(class_ids[true_label])
        if flags is not None:
          unknown.append(bool(flags[row]))
      if true_label in class_ids and predicted in class_ids:
        matrix[class_ids[true_label]][class_ids[predicted]] += 1
      scored_image = ScoredImage(
          true_label, predicted, float(probs[predicted_id]),
          feature_value(example, SOURCE_PATH_FEATURE),
          example.features.feature[preprocessing.IMAGE_KEY].bytes_list.value[0])
      if predicted == true_label:
        correct += 1
        if class_ids.get(predicted, MAX_CLASS_SAMPLES) < MAX_CLASS_SAMPLES:
          samples.setdefault(predicted, scored_image)
        continue
      entry = (scored_image.probability, -scored, scored_image)
      if len(heap) < top_n:
        heapq.heappush(heap, entry)
      elif top_n:
        heapq.heappushpop(heap, entry)
  mistakes = [entry[2] for entry in sorted(heap, key=lambda e: (-e[0], -e[1]))]
  truncated = scored == max_examples and any(
      True for _ in tf.data.TFRecordDataset(files, compression_type='GZIP')
      .skip(max_examples).take(1))
  return Scoring(examples=scored, correct=correct, confusion_matrix=matrix,
                 mistakes=mistakes,
                 probabilities=np.array(known_rows, np.float32).reshape(
                     -1, len(class_names)),
                 label_ids=np.array(label_ids, np.int64),
                 unknown=np.array(unknown, bool) if has_detector else None,
                 truncated=truncated,
                 class_samples=[samples[name] for name in class_names if name in samples])


def explain(model: signatures.SessionModel, scored: Scoring, image_size: int) -> Scoring:
  """`scored` with the Grad-CAM heatmap of every image it keeps, from the
  model's `explain_pixels` on the images decoded and resized like Transform
  does; a model exported before that signature raises KeyError."""
  shown = scored.mistakes + scored.class_samples
  if not shown:
    return scored
  pixels = image_codec.batch_decoder(image_size)(
      tf.constant([item.image for item in shown])).numpy()
  heatmaps = model.function(signatures.EXPLAIN_SIGNATURE)(pixels)[explain_lib.HEATMAP]
  explained = [dataclasses.replace(item, heatmap=heatmap)
               for item, heatmap in zip(shown, heatmaps)]
  return dataclasses.replace(scored, mistakes=explained[:len(scored.mistakes)],
                             class_samples=explained[len(scored.mistakes):])
