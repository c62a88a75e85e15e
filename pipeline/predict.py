"""Scores image files with a pushed model through its `serving_default` signature.

One JSON object per image on stdout. A file that is not a decodable image gets
an `error` entry instead of a prediction; the other images are still scored.
"""

import json
import os
import sys
from typing import Dict, Iterable, Iterator, List, TextIO

import numpy as np
import tensorflow as tf

from components.registry_pusher import registry
from components.trainer import signatures


def resolve_model_dir(path: str) -> str:
  """A SavedModel folder, or a registry model folder (its newest version)."""
  if os.path.exists(os.path.join(path, 'saved_model.pb')):
    return path
  return registry.version_dir(os.path.dirname(os.path.abspath(path)),
                              os.path.basename(os.path.abspath(path)))


def image_files(paths: Iterable[str]) -> Iterator[str]:
  """The given files, and every file below the given folders, sorted."""
  for path in paths:
    if os.path.isdir(path):
      for directory, subdirs, files in os.walk(path):
        subdirs.sort()
        for name in sorted(files):
          yield os.path.join(directory, name)
    else:
      yield path


class Predictor:
  """Holds a loaded SavedModel and scores encoded images in batches."""

  def __init__(self, model_dir: str, top_k: int = 3):
    self._serve = tf.saved_model.load(model_dir).signatures[
        signatures.SERVING_SIGNATURE]
    self._labels = registry.read_labels(model_dir)
    self._top_k = top_k

  def _score(self, batch: List[bytes]) -> Dict[str, np.ndarray]:
    outputs = self._serve(**{signatures.SERVING_INPUT: tf.constant(batch)})
    return {name: value.numpy() for name, value in outputs.items()}

  def predict(self, paths: List[str], contents: List[bytes]) -> List[Dict]:
    """Scores one batch; on a decode error, scores its images one by one."""
    try:
      outputs = self._score(contents)
    except tf.errors.InvalidArgumentError:
      if len(contents) == 1:
        return [{'path': paths[0], 'error': 'not a decodable image '
                 '(JPEG, PNG, GIF or BMP expected)'}]
      return [row for path, content in zip(paths, contents)
              for row in self.predict([path], [content])]
    rows = []
    for i, path in enumerate(paths):
      probabilities = outputs['probabilities'][i]
      top = np.argsort(-probabilities)[:self._top_k]
      rows.append({
          'path': path,
          'class_name': outputs['class_name'][i].decode('utf-8'),
          'class_id': int(outputs['class_id'][i]),
          'probability': float(probabilities[top[0]]),
          'top_k': [{'class_name': self._labels[c],
                     'probability': float(probabilities[c])} for c in top],
      })
    return rows


def run(model: str, inputs: List[str], batch_size: int = 32,
        out: TextIO = sys.stdout) -> int:
  """Prints one JSON line per file; returns how many files could not be scored."""
  model_dir = resolve_model_dir(model)
  predictor = Predictor(model_dir)
  failures = 0
  paths = list(image_files(inputs))
  for start in range(0, len(paths), batch_size):
    batch_paths, contents, rows = [], [], []
    for path in paths[start:start + batch_size]:
      try:
        with open(path, 'rb') as f:
          contents.append(f.read())
        batch_paths.append(path)
      except OSError as error:
        rows.append({'path': path, 'error': f'unreadable: {error.strerror}'})
    if contents:
      rows.extend(predictor.predict(batch_paths, contents))
    for row in rows:
      failures += 'error' in row
      out.write(json.dumps(row) + '\n')
  return failures
