"""Frozen-feature cache: the backbone's pooled features, once per image and view.

While the backbone is frozen, its output for a given input never changes. The
cache runs the backbone once per image and view (the clean image, its mirror
image, and any randomly augmented copies drawn by the classifier's own Keras
augmentation layers), and the head is then fitted on those arrays, many times
over for cross-validation, at no further backbone cost.
"""

import logging
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

# Seconds between progress lines on long passes (20,000 photos take minutes).
PROGRESS_SECONDS = 30
# A view: None for the clean image, else an augmentation layer (or function)
# applied in training mode, so a random one draws anew at every call.
View = Optional[Callable[..., tf.Tensor]]


def mirror(images: tf.Tensor, training: bool = True) -> tf.Tensor:  # pylint: disable=unused-argument
  """The horizontally mirrored view: a second labeled example per image
  wherever `augmentation.horizontal_flip` says mirroring keeps the label."""
  return tf.image.flip_left_right(images)


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

  def compute_views(self, image_batches: Iterable[tf.Tensor], views: Sequence[View],
                    what: str = 'images', total: Optional[int] = None) -> np.ndarray:
    """Features [len(views), N, D] of every image under every view; `total`,
    the number of images when known, goes into the progress lines.

    The extractor runs in inference mode, so BatchNorm statistics stay frozen.
    Each batch is augmented and embedded once per view, so images are held one
    batch at a time.
    """
    embedders = [self._embed(view) for view in views]
    start = time.perf_counter()
    per_view: List[List[np.ndarray]] = [[] for _ in views]
    count = 0
    reported = start
    for images in image_batches:
      count += int(images.shape[0])
      for outputs, embed in zip(per_view, embedders):
        outputs.append(embed(images).numpy())
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
    return np.stack([np.concatenate(outputs) for outputs in per_view])


def compute_views(extractor: tf_keras.Model, image_batches: Iterable[tf.Tensor],
                  views: Sequence[View], what: str = 'images') -> np.ndarray:
  """One pass of a fresh Embedder (Embedder.compute_views)."""
  return Embedder(extractor).compute_views(image_batches, views, what)
