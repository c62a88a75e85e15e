"""The benchmark's data sets (bench/datasets.py) on the bundled sample: the
label-efficiency numbers are only meaningful if the test images are never in
the pool and the labeled draws are balanced, nested and repeatable."""

import os

import numpy as np
import pytest
from PIL import Image

from bench import datasets
from helpers import SAMPLE_DIR


def _contents(images):
  return {image.tobytes() for image in images}


def test_sample_pool_and_test_are_balanced_and_disjoint():
  dataset = datasets.load('sample', pool_per_class=300, test_per_class=200)
  classes = len(dataset.class_names)
  assert sorted(dataset.class_names) == sorted(os.listdir(SAMPLE_DIR))
  # Capped at what the sample holds: 30 pool + 10 test of its 40 per class.
  assert np.bincount(dataset.pool_labels).tolist() == [30] * classes
  assert np.bincount(dataset.test_labels).tolist() == [10] * classes
  assert dataset.pool_images.shape == (30 * classes, 28, 28)
  assert dataset.pool_images.dtype == np.uint8
  assert dataset.pool_labels.dtype == np.int64
  pool, test = _contents(dataset.pool_images), _contents(dataset.test_images)
  assert len(pool) == 30 * classes and len(test) == 10 * classes
  assert not pool & test
  # Labels follow the folders: the first pool image of each class is its first file.
  for class_id, name in enumerate(dataset.class_names):
    first_file = sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[0]
    with Image.open(os.path.join(SAMPLE_DIR, name, first_file)) as image:
      expected = np.asarray(image)
    first = dataset.pool_images[np.flatnonzero(dataset.pool_labels == class_id)[0]]
    np.testing.assert_array_equal(first, expected)

  smaller = datasets.load('sample', pool_per_class=12, test_per_class=4)
  assert np.bincount(smaller.pool_labels).tolist() == [12] * classes
  assert np.bincount(smaller.test_labels).tolist() == [4] * classes


def test_labeled_subsets_are_balanced_nested_and_repeatable():
  dataset = datasets.load('sample', pool_per_class=30, test_per_class=10)
  classes = len(dataset.class_names)
  everything = np.arange(len(dataset.pool_labels))
  previous = np.array([], dtype=np.int64)
  for k in (5, 10, 25, 30):
    labeled, unlabeled = datasets.labeled_subset(dataset, k, seed=1)
    assert np.bincount(dataset.pool_labels[labeled], minlength=classes).tolist() == [k] * classes
    assert not set(labeled) & set(unlabeled)
    np.testing.assert_array_equal(np.sort(np.concatenate([labeled, unlabeled])), everything)
    assert set(previous) <= set(labeled)  # nested across k for one seed
    previous = labeled
    again, _ = datasets.labeled_subset(dataset, k, seed=1)
    np.testing.assert_array_equal(again, labeled)

  seed_0, _ = datasets.labeled_subset(dataset, 5, seed=0)
  seed_1, _ = datasets.labeled_subset(dataset, 5, seed=1)
  assert set(seed_0) != set(seed_1)
  with pytest.raises(ValueError, match='k=31'):
    datasets.labeled_subset(dataset, 31, seed=0)


def test_gate_split_holds_out_an_eval_split_apart_from_every_labeled_set():
  dataset = datasets.load('sample', pool_per_class=30, test_per_class=10)
  classes = len(dataset.class_names)
  everything = np.arange(len(dataset.pool_labels))
  for k in (5, 10, 20):
    labeled, evaluation, unlabeled = datasets.gate_split(dataset, k, seed=1, eval_per_class=3)
    np.testing.assert_array_equal(labeled, datasets.labeled_subset(dataset, k, seed=1)[0])
    assert np.bincount(dataset.pool_labels[evaluation], minlength=classes).tolist() == [3] * classes
    np.testing.assert_array_equal(
        np.sort(np.concatenate([labeled, evaluation, unlabeled])), everything)
    # The same eval images at every k, never among the 27 first labeled.
    if k == 5:
      first = evaluation
    np.testing.assert_array_equal(evaluation, first)
    assert not set(evaluation) & set(datasets.labeled_subset(dataset, 27, seed=1)[0])
  with pytest.raises(ValueError, match='k=28'):
    datasets.gate_split(dataset, 28, seed=0, eval_per_class=3)
