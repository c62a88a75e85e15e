"""Frozen-feature cache: the backbone's pooled features, once per image and view.

While the backbone is frozen, its output for a given input never changes, so
running it every epoch only repeats work: the head sees the same features
again. The cache runs the backbone once per image and augmentation view (the
clean image, plus a few randomly augmented copies) and the head then trains on
those arrays, each epoch drawing among the cached views: hundreds of times
cheaper per epoch on a CPU, with the same kind of augmented inputs (the views
are drawn by the same Keras augmentation layers the classifier carries).
"""

import logging
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

# A view: None for the clean image, else an augmentation layer applied in
# training mode (so it draws new random parameters at every call).
View = Optional[tf_keras.layers.Layer]


def compute_views(extractor: tf_keras.Model, image_batches: Iterable[tf.Tensor],
                  views: Sequence[View], what: str = 'images') -> np.ndarray:
  """Features [len(views), N, D] of every image under every view.

  `extractor` maps images to pooled features (model.feature_extractor); it
  is called in inference mode, so BatchNorm statistics stay frozen. Each
  batch is augmented and embedded once per view, so images are held one batch
  at a time.
  """
  def embedder(view: View) -> Callable[[tf.Tensor], tf.Tensor]:
    if view is None:
      return tf.function(lambda images: extractor(images, training=False),
                         reduce_retracing=True)
    return tf.function(
        lambda images: extractor(view(images, training=True), training=False),
        reduce_retracing=True)

  # One traced function per distinct view layer (tracing the backbone is slow).
  traced: Dict[int, Callable[[tf.Tensor], tf.Tensor]] = {}
  for view in views:
    if id(view) not in traced:
      traced[id(view)] = embedder(view)
  embedders = [traced[id(view)] for view in views]
  start = time.perf_counter()
  per_view: List[List[np.ndarray]] = [[] for _ in views]
  count = 0
  for images in image_batches:
    count += int(images.shape[0])
    for outputs, embed in zip(per_view, embedders):
      outputs.append(embed(images).numpy())
  seconds = time.perf_counter() - start
  if not count:
    raise ValueError(f'No {what} to compute features of.')
  logging.info('Feature cache: %d %s x %d view(s) in %.1f s (%.1f images/s).',
               count, what, len(views), seconds, count * len(views) / seconds)
  return np.stack([np.concatenate(outputs) for outputs in per_view])
