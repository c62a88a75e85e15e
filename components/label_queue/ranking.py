"""Which unlabeled images to label next: uncertain, and unlike each other.

Uncertainty alone picks twenty near-copies of the one confusing image; the
diversity term spreads the queue over the pool. Two stages, as in
"uncertainty pre-filter + core-set" active learning (Sener & Savarese 2018):

1. keep the `queue_size * candidate_factor` most uncertain images;
2. among them, greedy k-center (farthest-first) on L2-normalized embeddings,
   starting from the most uncertain image: each next pick is the candidate
   farthest from everything picked so far, its distance weighted by its
   uncertainty, so that of two equally novel images the less certain wins.

Why weighted: plain k-center forgets uncertainty once stage 1 is done, and
with a large `candidate_factor` it would queue the odd, confidently
classified outlier as readily as a confusing image; weighting keeps the order
"uncertain first" wherever novelty does not decide it. A near-copy of an
earlier pick scores about zero whatever its uncertainty, so it comes last.

Pure numpy and deterministic: ties go to the earlier image in pool order.
Stage 1 is also usable on its own (`most_uncertain`), so a caller can keep a
running shortlist over a pool streamed in batches and never hold it all.
"""

import dataclasses
import math
from typing import List, Sequence

import numpy as np

UNCERTAINTIES = ('margin', 'entropy')


@dataclasses.dataclass(frozen=True)
class Pick:
  index: int              # into the arrays `select` was given
  uncertainty_rank: int   # 1 = the most uncertain image of the pool
  # L2 distance of its normalized embedding to the nearest earlier pick
  # (0 = the same features, 1.41 = orthogonal); nan for the first pick.
  distance: float


def uncertainty(probabilities: np.ndarray, method: str) -> np.ndarray:
  """Per image, in [0, 1]: 1 - (p1 - p2) for 'margin', entropy / log(C) for 'entropy'."""
  if method == 'margin':
    top2 = np.sort(probabilities, axis=-1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])
  if method == 'entropy':
    p = np.clip(probabilities, 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1) / np.log(probabilities.shape[-1])
  raise ValueError(f'Unknown uncertainty {method!r}; valid: {UNCERTAINTIES}')


def most_uncertain(scores: np.ndarray, image_ids: Sequence[str], count: int) -> np.ndarray:
  """Indices of the `count` most uncertain images, most uncertain first.

  Exact duplicates (the same `image_ids`) count once: the first is kept.
  Ties go to the earlier index, so the shortlist of a concatenation of an
  earlier shortlist and new images equals that of the whole pool.
  """
  _, first = np.unique(np.asarray(image_ids), return_index=True)
  unique = np.sort(first)
  return unique[np.lexsort((unique, -scores[unique]))][:count]


def select(probabilities: np.ndarray, embeddings: np.ndarray, image_ids: Sequence[str],
           queue_size: int, candidate_factor: int, method: str) -> List[Pick]:
  """The images to label next, in queue order."""
  scores = uncertainty(probabilities, method)
  candidates = most_uncertain(scores, image_ids, queue_size * candidate_factor)
  if not len(candidates):
    return []
  vectors = embeddings[candidates].astype(np.float64)
  vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
  weights = scores[candidates]
  picks = [Pick(int(candidates[0]), 1, math.nan)]
  chosen = [0]
  nearest = np.linalg.norm(vectors - vectors[0], axis=1)    # to the chosen set
  while len(chosen) < min(queue_size, len(candidates)):
    weighted = nearest * weights
    weighted[chosen] = -1.0
    best = int(np.argmax(weighted))
    picks.append(Pick(int(candidates[best]), best + 1, float(nearest[best])))
    chosen.append(best)
    nearest = np.minimum(nearest, np.linalg.norm(vectors - vectors[best], axis=1))
  return picks
