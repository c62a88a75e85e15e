"""Scores image files with a pushed model through its `serving_default` signature.

Inputs are image files, folders (every file below them, recursively; hidden
files and folders are skipped) and list files (one path per line, blank lines
ignored, relative paths taken from the current directory; `-` is stdin).
Images are scored in batches; a batch with an undecodable image is scored
again one image at a time, so one bad file costs only itself.

One row per file, in input order, as JSON lines or CSV with the fields
path, prediction (the top class, or "unknown" for an image of no known class:
components/trainer/ood.py), class_name (the top class), class_id,
probability (of the top class), ood_score, top_k (the K most likely classes
with their probabilities; in CSV `name:prob;name:prob`) and error. A file that cannot be read or decoded gets an `error` instead of a
prediction, and the other files are still scored.
"""

import contextlib
import csv
import json
import os
import sys
from typing import Dict, Iterable, Iterator, List, Sequence, TextIO

import numpy as np
import tensorflow as tf

from components import image_codec
from components import safe_text
from components.registry_pusher import registry
from components.trainer import signatures

FORMATS = ('jsonl', 'csv')
FIELDS = ('path', 'prediction', 'class_name', 'class_id', 'probability', 'ood_score',
          'top_k', 'error')
STDIN = '-'


def resolve_model_dir(path: str) -> str:
  """A SavedModel folder, or a registry model folder (its newest version)."""
  if os.path.exists(os.path.join(path, 'saved_model.pb')):
    return path
  return registry.version_dir(os.path.dirname(os.path.abspath(path)),
                              os.path.basename(os.path.abspath(path)))


def image_files(paths: Iterable[str]) -> Iterator[str]:
  """The given files, and every non-hidden file below the given folders, sorted."""
  for path in paths:
    if os.path.isdir(path):
      for directory, subdirs, files in os.walk(path):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith('.'))
        for name in sorted(files):
          if not name.startswith('.'):
            yield os.path.join(directory, name)
    else:
      yield path


def read_list(list_file: str) -> List[str]:
  """The paths in a list file, one per line (`-`: standard input)."""
  if list_file == STDIN:
    lines = sys.stdin.read().splitlines()
  else:
    with open(list_file, encoding='utf-8') as f:
      lines = f.read().splitlines()
  return [line.strip() for line in lines if line.strip()]


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
    except tf.errors.InvalidArgumentError as error:
      if len(contents) == 1:
        return [{'path': paths[0],
                 'error': f'not a usable image: {image_codec.error_text(error)}'
                          f'{image_codec.conversion_hint(contents[0])}'}]
      return [row for path, content in zip(paths, contents)
              for row in self.predict([path], [content])]
    rows = []
    for i, path in enumerate(paths):
      probabilities = outputs['probabilities'][i]
      top = np.argsort(-probabilities, kind='stable')[:self._top_k]
      class_name = outputs['class_name'][i].decode('utf-8')
      row = {
          'path': path,
          # A model exported before the unknown-image detector has no `prediction`.
          'prediction': (outputs['prediction'][i].decode('utf-8')
                         if 'prediction' in outputs else class_name),
          'class_name': class_name,
          'class_id': int(outputs['class_id'][i]),
          'probability': float(probabilities[top[0]]),
          'top_k': [{'class_name': self._labels[c],
                     'probability': float(probabilities[c])} for c in top],
      }
      if 'ood_score' in outputs:
        row['ood_score'] = float(outputs['ood_score'][i])
      rows.append(row)
    return rows


class _JsonLinesWriter:

  def __init__(self, out: TextIO):
    self._out = out

  def write(self, row: Dict) -> None:
    self._out.write(json.dumps(row) + '\n')


class _CsvWriter:
  """A header, then one line per file; empty cells where a field does not apply.
  Cells that would start a spreadsheet formula get a leading `'` (JSON lines
  keep the real names)."""

  def __init__(self, out: TextIO):
    self._writer = csv.DictWriter(out, FIELDS, lineterminator='\n')
    self._writer.writeheader()

  def write(self, row: Dict) -> None:
    if 'top_k' in row:
      row = {**row, 'top_k': ';'.join(f"{k['class_name']}:{k['probability']!r}"
                                      for k in row['top_k'])}
    self._writer.writerow(safe_text.spreadsheet_row(row))


def _read_batch(paths: Sequence[str]):
  """({position: file content}, {position: error row}) for one batch of paths."""
  contents, errors = {}, {}
  for i, path in enumerate(paths):
    try:
      with open(path, 'rb') as f:
        contents[i] = f.read()
    except OSError as error:
      errors[i] = {'path': path, 'error': f'unreadable: {error.strerror}'}
  return contents, errors


def run(model: str, inputs: Sequence[str], batch_size: int = 32,
        top_k: int = 3, output_format: str = 'jsonl', lists: Sequence[str] = (),
        output: str | None = None) -> int:
  """Writes one row per file to `output` (a file path; default stdout) and
  returns how many files could not be scored."""
  if output_format not in FORMATS:
    raise ValueError(f'--format must be one of {FORMATS}, not {output_format!r}')
  if top_k < 1 or batch_size < 1:
    raise ValueError('--top-k and --batch-size must be at least 1')
  listed = [path for list_file in lists for path in read_list(list_file)]
  paths = list(image_files([*inputs, *listed]))
  if not paths:
    raise ValueError('no image files to score (the arguments, folders and lists are empty)')
  predictor = Predictor(resolve_model_dir(model), top_k)
  with (open(output, 'w', encoding='utf-8', newline='') if output
        else contextlib.nullcontext(sys.stdout)) as out:
    writer = _CsvWriter(out) if output_format == 'csv' else _JsonLinesWriter(out)
    failures = 0
    for start in range(0, len(paths), batch_size):
      batch = paths[start:start + batch_size]
      contents, rows = _read_batch(batch)
      if contents:
        positions = sorted(contents)
        rows.update(zip(positions, predictor.predict(
            [batch[i] for i in positions], [contents[i] for i in positions])))
      for i in range(len(batch)):
        failures += 'error' in rows[i]
        writer.write(rows[i])
      out.flush()
  print(f'Scored {len(paths) - failures} of {len(paths)} files, {failures} failed.',
        file=sys.stderr)
  return failures
