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


def compute_views(extractor: tf_keras.Model, image_batches: Iterable[tf.Tensor],
                  views: Sequence[View], what: str = 'images') -> np.ndarray:
  """Features [len(views), N, D] of every image under every view.

  `extractor` maps images to pooled features (model.feature_extractor); it
  is called in inference mode, so BatchNorm statistics stay frozen. Each
  batch is augmented and embedded once per view, so images are held one batch
  at a time.
  """
  # One input signature, so the backbone is traced once per view whatever the
  # size of the last batch; no autograph, whose conversion of the Keras layers'
  # code took ~15 s of the first trace (the graph is plain TensorFlow ops).
  images_spec = [tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)]

  def embedder(view: View) -> Callable[[tf.Tensor], tf.Tensor]:
    def embed(images):
      if view is not None:
        images = view(images, training=True)
      return extractor(images, training=False)
    return tf.function(embed, input_signature=images_spec, autograph=False)

  # One traced function per distinct view layer (tracing the backbone is slow).
  traced: Dict[int, Callable[[tf.Tensor], tf.Tensor]] = {}
  for view in views:
    if id(view) not in traced:
      traced[id(view)] = embedder(view)
  embedders = [traced[id(view)] for view in views]
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
      logging.info('Feature cache: %d %s x %d view(s) so far (%.1f images/s).', count,
                   what, len(views), count * len(views) / (reported - start))
  seconds = time.perf_counter() - start
  if not count:
    raise ValueError(f'No {what} to compute features of.')
  logging.info('Feature cache: %d %s x %d view(s) in %.1f s (%.1f images/s).',
               count, what, len(views), seconds, count * len(views) / seconds)
  return np.stack([np.concatenate(outputs) for outputs in per_view])
