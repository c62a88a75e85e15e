"""Nearest neighbours by cosine similarity, blockwise: the one search the
data-quality audit (near-duplicates, outliers) and the unknown-image detector
(ood.py) share."""

from typing import Optional, Tuple

import numpy as np

# Rows of the similarity matrix computed at once (BLOCK x len(reference) float32).
BLOCK = 1024


def unit_rows(features: np.ndarray) -> np.ndarray:
  """Each row scaled to length 1, float32."""
  norms = np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  return (features / norms).astype(np.float32)


def nearest(queries: np.ndarray, reference: np.ndarray, k: int,
            own: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(similarities, indices into `reference`) [len(queries), k] of each
  query's k most similar reference rows, most similar first. `own[i]`, when
  given, is query i's own row in `reference` (or -1): never its own neighbour."""
  queries, reference = unit_rows(queries), unit_rows(reference)
  similarities = np.empty((len(queries), k), np.float32)
  indices = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), BLOCK):
    block = queries[start:start + BLOCK] @ reference.T
    if own is not None:
      rows = np.flatnonzero(own[start:start + BLOCK] >= 0)
      block[rows, own[start + rows]] = -np.inf
    top = np.argpartition(-block, k - 1, axis=1)[:, :k]
    top_similarities = np.take_along_axis(block, top, axis=1)
    order = np.argsort(-top_similarities, axis=1, kind='stable')
    indices[start:start + BLOCK] = np.take_along_axis(top, order, axis=1)
    similarities[start:start + BLOCK] = np.take_along_axis(top_similarities, order, axis=1)
  return similarities, indices
