"""Scores image files with a pushed model through its `serving_default` signature.

Inputs are image files, folders (every file below them, recursively; hidden
files and folders are skipped) and list files (one path per line, blank lines
ignored, relative paths taken from the current directory; `-` is stdin).
Images are scored in batches; a batch with an undecodable image is scored
again one image at a time, so one bad file costs only itself.

One row per file, in input order, as JSON lines or CSV with the fields
path, prediction (the top class, or "unknown" for an image of no known class:
models/ood.py), class_name (the top class), class_id,
probability (of the top class), ood_score, top_k (the K most likely classes
with their probabilities; in CSV `name:prob;name:prob`) and error. A file
that cannot be read or decoded gets an `error` instead of a prediction, and
the other files are still scored.

With an explanation folder (`--explain DIR`), each scored image also gets a
Grad-CAM overlay there, from the model's `explain_pixels` signature, and its
row the overlay's path (field explanation).
"""

import contextlib
import csv
import json
import os
import sys
from typing import Dict, Iterable, Iterator, List, Sequence, TextIO, Tuple

import numpy as np
import tensorflow as tf

from components import safe_text
from models import explain as explain_lib
from models import image_codec
from models import signatures
from pipeline.report import plots
from registry import Registry
from registry import layout

FORMATS = ('jsonl', 'csv')
FIELDS = ('path', 'prediction', 'class_name', 'class_id', 'probability', 'ood_score',
          'top_k', 'error')
EXPLANATION_FIELD = 'explanation'
OVERLAY_SUFFIX = '.gradcam.png'
STDIN = '-'


def resolve_model(path: str) -> Tuple[str, List[str]]:
  """(SavedModel folder, class names) of a SavedModel folder with its labels.txt,
  or of a registry model folder's newest version."""
  if os.path.exists(os.path.join(path, 'saved_model.pb')):
    return path, layout.read_labels(path)
  folder = os.path.abspath(path)
  model = Registry(os.path.dirname(folder), os.path.basename(folder)).latest()
  return model.path, model.labels


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


class Explainer:
  """Writes Grad-CAM overlays of scored images into a folder, from the model's
  `explain_pixels` signature, under names taken from the images' own."""

  def __init__(self, loaded, model_dir: str, directory: str):
    if signatures.EXPLAIN_SIGNATURE not in loaded.signatures:
      raise ValueError(
          f'the model {model_dir} has no {signatures.EXPLAIN_SIGNATURE!r} signature '
          '(it was exported before Grad-CAM): --explain needs a newer version')
    self._explain = loaded.signatures[signatures.EXPLAIN_SIGNATURE]
    _, inputs = self._explain.structured_input_signature
    size = int(inputs[signatures.PIXELS_INPUT].shape[1])
    self._pixels = image_codec.batch_decoder(size)
    # A graph too: eagerly, op by op, the decoder is ~30x slower.
    self._decode = tf.function(lambda image: image_codec.decode_rgb(image), autograph=False,
                               input_signature=[tf.TensorSpec([], tf.string)])
    self._directory = directory
    self._taken = set()
    os.makedirs(directory, exist_ok=True)

  def _overlay_path(self, path: str) -> str:
    """DIR/<file name without extension>.gradcam.png, numbered (-2, -3, ...)
    when another input of this run already took the name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, number = stem + OVERLAY_SUFFIX, 1
    while name in self._taken:
      number += 1
      name = f'{stem}-{number}{OVERLAY_SUFFIX}'
    self._taken.add(name)
    return os.path.join(self._directory, name)

  def explain(self, paths: List[str], contents: List[bytes]) -> List[str]:
    """Writes one overlay per image (decodable ones: scored already); returns
    their paths."""
    pixels = self._pixels(tf.constant(contents))
    heatmaps = self._explain(
        **{signatures.PIXELS_INPUT: pixels})[explain_lib.HEATMAP].numpy()
    written = []
    for path, content, heatmap in zip(paths, contents, heatmaps):
      overlay = plots.heatmap_overlay(self._decode(content).numpy(), heatmap)
      written.append(self._overlay_path(path))
      with open(written[-1], 'wb') as f:
        f.write(overlay)
    return written


class Predictor:
  """Holds a loaded SavedModel and scores encoded images in batches; with an
  `explain_dir`, writes each scored image's Grad-CAM overlay there too."""

  def __init__(self, model_dir: str, labels: List[str], top_k: int = 3,
               explain_dir: str | None = None):
    loaded = tf.saved_model.load(model_dir)
    self._serve = loaded.signatures[signatures.SERVING_SIGNATURE]
    self._explainer = Explainer(loaded, model_dir, explain_dir) if explain_dir else None
    self._labels = labels
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
    if self._explainer:
      for row, overlay in zip(rows, self._explainer.explain(paths, contents)):
        row[EXPLANATION_FIELD] = overlay
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

  def __init__(self, out: TextIO, fields: Sequence[str] = FIELDS):
    self._writer = csv.DictWriter(out, fields, lineterminator='\n')
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
        output: str | None = None, explain_dir: str | None = None) -> int:
  """Writes one row per file to `output` (a file path; default stdout) and
  returns how many files could not be scored. `explain_dir`: the folder for
  the Grad-CAM overlays (`Explainer`)."""
  if output_format not in FORMATS:
    raise ValueError(f'--format must be one of {FORMATS}, not {output_format!r}')
  if top_k < 1 or batch_size < 1:
    raise ValueError('--top-k and --batch-size must be at least 1')
  listed = [path for list_file in lists for path in read_list(list_file)]
  paths = list(image_files([*inputs, *listed]))
  if not paths:
    raise ValueError('no image files to score (the arguments, folders and lists are empty)')
  predictor = Predictor(*resolve_model(model), top_k, explain_dir)
  with (open(output, 'w', encoding='utf-8', newline='') if output
        else contextlib.nullcontext(sys.stdout)) as out:
    fields = (*FIELDS, EXPLANATION_FIELD) if explain_dir else FIELDS
    writer = _CsvWriter(out, fields) if output_format == 'csv' else _JsonLinesWriter(out)
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
