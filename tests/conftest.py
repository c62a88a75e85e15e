"""Shared test set-up: Keras 2 before TensorFlow, repo root importable, and
small real image folders built with Pillow."""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import pytest  # pylint: disable=g-import-not-at-top

SAMPLE_DIR = os.path.join(REPO_ROOT, 'data', 'fashion_mnist_sample')


def copy_sample(destination: str, classes, per_class: int) -> str:
  """Copies the first `per_class` bundled images of each class; returns the folder."""
  import shutil  # pylint: disable=g-import-not-at-top
  for name in classes:
    os.makedirs(os.path.join(destination, name))
    for file_name in sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[:per_class]:
      shutil.copy(os.path.join(SAMPLE_DIR, name, file_name),
                  os.path.join(destination, name, file_name))
  return destination


@pytest.fixture
def sample_copy():
  return copy_sample
