"""Frozen-feature cache: the backbone's pooled features, once per image and view.

While the backbone is frozen, its output for a given input never changes. The
cache runs the backbone once per image and view (the clean image, its mirror
image, and any randomly augmented copies drawn by the classifier's own Keras
augmentation layers), and the head is then fitted on those arrays, many times
over for cross-validation, at no further backbone cost.

The Trainer runs this pass itself by default. With `training.beam_features`
the BackboneFeatures step runs it on Beam instead, through the same Embedder
and views, and writes one record per image (`encode_record`), which the
Trainer reads back (`read_records`).
"""

import logging
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components.contracts import (BACKBONE_FEATURES_FEATURE, IMAGE_ID_FEATURE,
                                  LABEL_ID_FEATURE, SOURCE_PATH_FEATURE)
from models import preprocessing
from models.settings import ModelSettings

# Seconds between progress lines on long passes (20,000 photos take minutes).
PROGRESS_SECONDS = 30
# A view: None for the clean image, else an augmentation layer (or function)
# applied in training mode, so a random one draws anew at every call.
View = Optional[Callable[..., tf.Tensor]]


def mirror(images: tf.Tensor, training: bool = True) -> tf.Tensor:  # pylint: disable=unused-argument
  """The horizontally mirrored view: a second labeled example per image
  wherever `augmentation.horizontal_flip` says mirroring keeps the label."""
  return tf.image.flip_left_right(images)


def labeled_views(settings: ModelSettings, augmentation: View) -> List[View]:
  """The views of each labeled train image: the clean one, its mirror image
  (augmentation.horizontal_flip) and `training.cached_views` random copies
  drawn by `augmentation`, the classifier's own augmentation layer."""
  mirrored = [mirror] if settings.augmentation.horizontal_flip else []
  return [None, *mirrored, *[augmentation] * settings.training.cached_views]


@tf.autograph.experimental.do_not_convert
def transformed_batch(transform: tf_keras.layers.Layer,
                      raw: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
  """(images, label ids) of a batch of raw examples through the transform
  graph (`transform`, its TFT layer): decode, resize, normalize, look up the
  label. Plain TF ops and a loaded graph: autograph, which Dataset.map applies
  by default, cost about 5 s per map and changed nothing."""
  features = transform({key: raw[key]
                        for key in (preprocessing.IMAGE_KEY, preprocessing.LABEL_KEY)})
  return (features[preprocessing.TRANSFORMED_IMAGE_KEY],
          tf.reshape(features[preprocessing.TRANSFORMED_LABEL_KEY], [-1]))


class Embedder:
  """`extractor` (images -> pooled features, model.feature_extractor) traced
  once per view and kept: every pass of a run (labeled, unlabeled, eval)
  shares the traces, and tracing the backbone costs seconds each time."""

  def __init__(self, extractor: tf_keras.Model):
    self._extractor = extractor
    # One input signature, so the backbone is traced once per view whatever
    # the size of the last batch.
    self._images_spec = [tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)]
    self._traced: Dict[int, Callable[[tf.Tensor], tf.Tensor]] = {}

  def _embed(self, view: View) -> Callable[[tf.Tensor], tf.Tensor]:
    if id(view) not in self._traced:
      def embed(images):
        if view is not None:
          images = view(images, training=True)
        return self._extractor(images, training=False)
      # No autograph, whose conversion of the Keras layers' code took ~15 s of
      # the first trace (the graph is plain TensorFlow ops).
      self._traced[id(view)] = tf.function(embed, input_signature=self._images_spec,
                                           autograph=False)
    return self._traced[id(view)]

  def embed(self, images: tf.Tensor, views: Sequence[View]) -> np.ndarray:
    """Features [len(views), batch, D] of one batch of images."""
    return np.stack([self._embed(view)(images).numpy() for view in views])

  def compute_views(self, image_batches: Iterable[tf.Tensor], views: Sequence[View],
                    what: str = 'images', total: Optional[int] = None) -> np.ndarray:
    """Features [len(views), N, D] of every image under every view; `total`,
    the number of images when known, goes into the progress lines.

    The extractor runs in inference mode, so BatchNorm statistics stay frozen.
    Each batch is augmented and embedded once per view, so images are held one
    batch at a time.
    """
    start = time.perf_counter()
    batches: List[np.ndarray] = []
    count = 0
    reported = start
    for images in image_batches:
      count += int(images.shape[0])
      batches.append(self.embed(images, views))
      if time.perf_counter() - reported >= PROGRESS_SECONDS:
        reported = time.perf_counter()
        rate = count / (reported - start)
        left = (f', about {(total - count) / rate:.0f} s left'
                if total and total > count else '')
        logging.info('Feature cache: %d%s %s x %d view(s) so far (%.1f images/s%s).',
                     count, f' of {total}' if total else '', what, len(views),
                     rate * len(views), left)
    seconds = time.perf_counter() - start
    if not count:
      raise ValueError(f'No {what} to compute features of.')
    logging.info('Feature cache: %d %s x %d view(s) in %.1f s (%.1f images/s).',
                 count, what, len(views), seconds, count * len(views) / seconds)
    return np.concatenate(batches, axis=1)


def compute_views(extractor: tf_keras.Model, image_batches: Iterable[tf.Tensor],
                  views: Sequence[View], what: str = 'images') -> np.ndarray:
  """One pass of a fresh Embedder (Embedder.compute_views)."""
  return Embedder(extractor).compute_views(image_batches, views, what)


def encode_record(features: np.ndarray, label_id: int, source_path: bytes,
                  image_id: bytes) -> bytes:
  """One image's record in BackboneFeatures' output: its features [views, D]
  under every view, its label id and ImageExampleGen's names."""
  def strings(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature={
      BACKBONE_FEATURES_FEATURE: tf.train.Feature(
          float_list=tf.train.FloatList(value=features.reshape(-1))),
      LABEL_ID_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=[label_id])),
      SOURCE_PATH_FEATURE: strings(source_path),
      IMAGE_ID_FEATURE: strings(image_id),
  })).SerializeToString()


def read_records(files: Sequence[str], views: int, dim: int) -> Dict[str, np.ndarray]:
  """BackboneFeatures' records in `files` (GZIP TFRecords) as arrays:
  `features` [views, N, dim], `labels` [N], and the names `source_path` and
  `image_id` [N]. A record of another shape (features computed under other
  settings) fails the parse."""
  spec = {BACKBONE_FEATURES_FEATURE: tf.io.FixedLenFeature([views, dim], tf.float32),
          LABEL_ID_FEATURE: tf.io.FixedLenFeature([], tf.int64),
          SOURCE_PATH_FEATURE: tf.io.FixedLenFeature([], tf.string),
          IMAGE_ID_FEATURE: tf.io.FixedLenFeature([], tf.string)}
  columns: Dict[str, List[np.ndarray]] = {key: [] for key in spec}
  dataset = tf.data.TFRecordDataset(list(files), compression_type='GZIP').batch(1024)
  for batch in dataset.map(lambda serialized: tf.io.parse_example(serialized, spec)):
    for key, values in batch.items():
      columns[key].append(values.numpy())
  empty = {BACKBONE_FEATURES_FEATURE: np.zeros([0, views, dim], np.float32),
           LABEL_ID_FEATURE: np.zeros([0], np.int64)}
  arrays = {key: np.concatenate(values) if values else empty.get(key, np.array([], object))
            for key, values in columns.items()}
  return {'features': arrays[BACKBONE_FEATURES_FEATURE].transpose(1, 0, 2),
          'labels': arrays[LABEL_ID_FEATURE],
          'source_path': arrays[SOURCE_PATH_FEATURE], 'image_id': arrays[IMAGE_ID_FEATURE]}
