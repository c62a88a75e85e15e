#!/usr/bin/env python3
"""Regenerate the bundled Fashion-MNIST sample in data/fashion_mnist_sample/
and its unlabeled pool in data/fashion_mnist_unlabeled/.

What: reads the Fashion-MNIST *test* split (t10k IDX files) and writes, for each
of the 10 classes, the first N images in file order (default 40) as 28x28
grayscale PNGs to

    <output>/<class_name>/<class_name>_<index in the source file, 5 digits>.png

one sub-folder per class, which is the layout the pipeline ingests; then the
next M images of each class (default 20) to one flat folder, named so that
the class does not show (the pipeline's `--unlabeled` folder):

    <unlabeled output>/unlabeled_<index in the source file, 5 digits>.png

Why: the repository ships a small, license-clean sample so the pipeline runs
out of the box without network access. The sample is a pure function of the
source files and this script: the selection is by file order (no randomness)
and the PNGs are written with fixed encoder options and no metadata, so running
the script twice gives byte-identical files and the sample can be rebuilt and
checked at any time.

Source: the Debian package `dataset-fashion-mnist` (MIT/Expat licence,
Copyright 2017 Zalando SE), which installs the IDX files (gzip-compressed) to
/usr/share/datasets/fashion-mnist/. Install it with

    sudo apt-get install dataset-fashion-mnist

Only the Python standard library, numpy and Pillow are used.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import struct
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

DEBIAN_PACKAGE = 'dataset-fashion-mnist'
DEFAULT_SOURCE = '/usr/share/datasets/fashion-mnist'
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'fashion_mnist_sample')
DEFAULT_PER_CLASS = 40
DEFAULT_UNLABELED_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'fashion_mnist_unlabeled')
DEFAULT_UNLABELED_PER_CLASS = 20

# Filesystem-friendly class folder names, indexed by the original label id.
CLASS_NAMES = (
    'tshirt_top',   # 0 T-shirt/top
    'trouser',      # 1 Trouser
    'pullover',     # 2 Pullover
    'dress',        # 3 Dress
    'coat',         # 4 Coat
    'sandal',       # 5 Sandal
    'shirt',        # 6 Shirt
    'sneaker',      # 7 Sneaker
    'bag',          # 8 Bag
    'ankle_boot',   # 9 Ankle boot
)

# Test split file stems, as shipped upstream and by the Debian package.
IMAGES_STEM = 't10k-images-idx3-ubyte'
LABELS_STEM = 't10k-labels-idx1-ubyte'

# Fixed PNG encoder options: no `optimize` search, a fixed zlib level, and no
# pnginfo / dpi / icc, so Pillow writes only IHDR, IDAT and IEND chunks.
PNG_OPTIONS = {'optimize': False, 'compress_level': 9}

_IDX_UBYTE = 0x08  # IDX data type code for unsigned bytes

log = logging.getLogger('regenerate_sample')


class SampleError(Exception):
  """A problem the user can fix; reported without a traceback."""


def _missing_source_message(source: str, missing: Sequence[str]) -> str:
  return (
      f'Fashion-MNIST test files not found in {source!r}: missing '
      f'{", ".join(missing)} (plain or .gz).\n'
      f'Install the Debian package that provides them:\n'
      f'    sudo apt-get update && sudo apt-get install -y {DEBIAN_PACKAGE}\n'
      f'(it installs them to {DEFAULT_SOURCE}), or pass --source DIR pointing '
      f'at a directory that holds {IMAGES_STEM}[.gz] and {LABELS_STEM}[.gz].')


def find_idx_file(source: str, stem: str) -> Optional[str]:
  """Returns the path of `stem` or `stem.gz` in `source`, or None."""
  for name in (stem + '.gz', stem):
    path = os.path.join(source, name)
    if os.path.isfile(path):
      return path
  return None


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (gzip-compressed or not)."""
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == b'\x1f\x8b':  # gzip magic, whatever the file name says
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0:2] != b'\x00\x00':
    raise SampleError(f'{path}: not an IDX file (bad magic number).')
  dtype_code, ndim = raw[2], raw[3]
  if dtype_code != _IDX_UBYTE:
    raise SampleError(f'{path}: IDX data type 0x{dtype_code:02x} is not '
                      f'unsigned byte (0x08).')
  header_len = 4 + 4 * ndim
  shape = struct.unpack(f'>{ndim}I', raw[4:header_len])
  expected = int(np.prod(shape, dtype=np.int64))
  if len(raw) - header_len != expected:
    raise SampleError(f'{path}: expected {expected} data bytes for shape '
                      f'{shape}, found {len(raw) - header_len}.')
  return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def load_test_split(source: str):
  """Returns (images [N, 28, 28] uint8, labels [N] uint8) of the t10k split."""
  paths = {stem: find_idx_file(source, stem)
           for stem in (IMAGES_STEM, LABELS_STEM)}
  missing = [stem for stem, path in paths.items() if path is None]
  if missing:
    raise SampleError(_missing_source_message(source, missing))
  images = read_idx(paths[IMAGES_STEM])
  labels = read_idx(paths[LABELS_STEM])
  log.info('Read %s %s and %s %s', paths[IMAGES_STEM], images.shape,
           paths[LABELS_STEM], labels.shape)
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise SampleError(f'Unexpected image array shape {images.shape}; '
                      f'expected (N, 28, 28).')
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise SampleError(f'{labels.shape[0]} labels for {images.shape[0]} images.')
  if labels.size and int(labels.max()) >= len(CLASS_NAMES):
    raise SampleError(f'Label id {int(labels.max())} is out of range for '
                      f'{len(CLASS_NAMES)} classes.')
  return images, labels


def select(labels: np.ndarray, per_class: int,
           skip: int = 0) -> Dict[int, List[int]]:
  """For each class id, the indices of its `per_class` images after its
  first `skip`."""
  selection = {}
  for class_id, name in enumerate(CLASS_NAMES):
    indices = np.flatnonzero(labels == class_id)[skip:skip + per_class].tolist()
    if len(indices) < per_class:
      raise SampleError(f'Class {name!r} has only {len(indices)} images in '
                        f'the test split after its first {skip}; {per_class} '
                        'requested.')
    selection[class_id] = indices
  return selection


def write_png(image: np.ndarray, path: str) -> int:
  """Writes a 2-D uint8 array as an 8-bit grayscale PNG; returns its size."""
  # A 2-D uint8 array maps to mode 'L' (8-bit grayscale), kept at 28x28.
  img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
  assert img.mode == 'L', img.mode
  img.save(path, format='PNG', **PNG_OPTIONS)
  return os.path.getsize(path)


def remove_stale(folder: str, wanted: set) -> None:
  """Drops PNGs left in `folder` by an earlier run with other options, so it
  holds exactly this selection (the pipeline ingests every file it finds)."""
  for stale in sorted(set(os.listdir(folder)) - wanted):
    stale_path = os.path.join(folder, stale)
    if stale.endswith('.png') and os.path.isfile(stale_path):
      os.remove(stale_path)
      log.info('Removed stale %s', stale_path)
    else:
      log.warning('Leaving unexpected entry %s in place', stale_path)


def write_sample(images: np.ndarray, selection: Dict[int, List[int]],
                 output: str) -> int:
  """Writes the selected images under `output`; returns the total bytes."""
  total_bytes = 0
  total_files = 0
  for class_id, indices in selection.items():
    name = CLASS_NAMES[class_id]
    class_dir = os.path.join(output, name)
    os.makedirs(class_dir, exist_ok=True)
    remove_stale(class_dir, {f'{name}_{index:05d}.png' for index in indices})
    class_bytes = 0
    for index in indices:
      class_bytes += write_png(
          images[index], os.path.join(class_dir, f'{name}_{index:05d}.png'))
    log.info('Wrote %3d images to %-11s (label %d, source indices %d..%d, '
             '%d bytes)', len(indices), name, class_id, indices[0],
             indices[-1], class_bytes)
    total_bytes += class_bytes
    total_files += len(indices)
  log.info('Wrote %d images, %d bytes in total, to %s', total_files,
           total_bytes, output)
  return total_bytes


def write_unlabeled(images: np.ndarray, selection: Dict[int, List[int]],
                    output: str) -> int:
  """Writes the selected images of every class to one flat folder, named by
  source index only; returns the total bytes."""
  indices = sorted(index for class_indices in selection.values()
                   for index in class_indices)
  os.makedirs(output, exist_ok=True)
  remove_stale(output, {f'unlabeled_{index:05d}.png' for index in indices})
  total_bytes = sum(
      write_png(images[index], os.path.join(output, f'unlabeled_{index:05d}.png'))
      for index in indices)
  log.info('Wrote %d unlabeled images, %d bytes in total, to %s', len(indices),
           total_bytes, output)
  return total_bytes


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='regenerate_sample.py',
      description=(
          'Write a deterministic Fashion-MNIST sample for the pipeline: from '
          'the test split (t10k), the first N images of each of the 10 '
          'classes in file order, as 28x28 grayscale PNGs in one sub-folder '
          'per class (<output>/<class>/<class>_<source index>.png), and the '
          'next M of each class as an unlabeled pool in one flat folder '
          '(<unlabeled output>/unlabeled_<source index>.png). Output is '
          'byte-identical across runs.'),
      epilog=(
          f'Source files come from the Debian package {DEBIAN_PACKAGE} '
          f'(apt-get install -y {DEBIAN_PACKAGE}). Class folders: '
          + ', '.join(f'{i}={n}' for i, n in enumerate(CLASS_NAMES)) + '.'))
  parser.add_argument(
      '--source', default=DEFAULT_SOURCE, metavar='DIR',
      help=f'directory with {IMAGES_STEM}[.gz] and {LABELS_STEM}[.gz] '
           f'(default: {DEFAULT_SOURCE})')
  parser.add_argument(
      '--output', default=DEFAULT_OUTPUT, metavar='DIR',
      help='directory to write the class sub-folders to '
           '(default: data/fashion_mnist_sample next to this script)')
  parser.add_argument(
      '--per-class', type=int, default=DEFAULT_PER_CLASS, metavar='N',
      help=f'images per class (default: {DEFAULT_PER_CLASS})')
  parser.add_argument(
      '--unlabeled-output', default=DEFAULT_UNLABELED_OUTPUT, metavar='DIR',
      help='flat folder for the unlabeled pool (default: '
           'data/fashion_mnist_unlabeled next to this script)')
  parser.add_argument(
      '--unlabeled-per-class', type=int, default=DEFAULT_UNLABELED_PER_CLASS,
      metavar='M', help='images per class in the unlabeled pool, the next M '
      f'after the sample\'s N; 0 writes no pool (default: {DEFAULT_UNLABELED_PER_CLASS})')
  args = parser.parse_args(argv)
  if args.per_class < 1:
    parser.error('--per-class must be at least 1')
  if args.unlabeled_per_class < 0:
    parser.error('--unlabeled-per-class must be at least 0')
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format='%(levelname)s: %(message)s')
  args = parse_args(argv)
  try:
    images, labels = load_test_split(args.source)
    write_sample(images, select(labels, args.per_class), args.output)
    if args.unlabeled_per_class:
      write_unlabeled(images, select(labels, args.unlabeled_per_class,
                                     skip=args.per_class), args.unlabeled_output)
  except SampleError as e:
    log.error('%s', e)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
