"""Executor of LabelQueue: scores the unlabeled split, writes what to label next.

The new model's `embeddings_from_examples` signature runs over the raw
`unlabeled` examples in batches of 64; images already labeled (their
`image_id`, the sha256 of the bytes, is in a labeled split) and repeats of one
image are skipped before scoring. Only a shortlist of the
`queue_size * candidate_factor` most uncertain images is kept while the pool
streams by (ranking.most_uncertain), so memory does not grow with the pool;
ranking.select then picks the queue from it.

With the Trainer's `model_run` and `check_labels` > 0, the queue starts with
the audit's most likely wrong labels (data_quality/suspect_labels.csv):
"check this label", ahead of "label this new image".

Outputs, in the artifact's folder: `label_queue.csv` (its columns, and how
the labels come back: docs/labeling.md), `contact_sheet.png` (the queued
images in rank order, captioned) and `label_queue.json` (what was counted and
the knobs).
"""

import collections
import csv
import io
import json
import logging
import os
from typing import Any, Counter, Dict, List, Optional, Set, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageOps
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import artifact_readers
from components import example_splits
from components import safe_text
from components.contracts import (CHECK_LABELS_PROPERTY, CONTACT_SHEET, IMAGE_FEATURE,
                                  IMAGE_ID_FEATURE, QUEUE_CSV, QUEUED_PROPERTY,
                                  SOURCE_PATH_FEATURE, SUSPECT_LABELS_CSV,
                                  UNLABELED_SPLIT)
from components.label_queue import ranking
from components.label_queue import spec
from models import signatures

SUMMARY_JSON = 'label_queue.json'
CSV_COLUMNS = ['rank', 'path', 'source_path', 'image_id', 'predicted', 'probability',
               'runner_up', 'runner_up_probability', 'margin', 'entropy', 'why', 'label']
BATCH_SIZE = 64
# The contact sheet: up to COLUMNS cells a row, each a THUMBNAIL_SIZE square
# over CAPTION_HEIGHT pixels of caption (three lines).
THUMBNAIL_SIZE = 128
CAPTION_HEIGHT = 40
COLUMNS = 5
_ID, _SOURCE = IMAGE_ID_FEATURE, SOURCE_PATH_FEATURE
_TEXT_FIELDS = (IMAGE_FEATURE, _ID, _SOURCE)


def check_label_rows(model_run_uri: str, count: int, labeled_dir: str) -> List[Dict[str, Any]]:
  """The audit's `count` most likely wrong labels as queue rows (unranked)."""
  suspects = artifact_readers.data_quality_list(
      artifact_readers.data_quality_dir(model_run_uri), SUSPECT_LABELS_CSV) or []
  return [{
      'path': os.path.join(labeled_dir, row['source_path']),
      'source_path': row['source_path'], 'image_id': row['image_id'],
      'predicted': row['suggested'], 'probability': row['suggested_probability'],
      'runner_up': row['given'], 'runner_up_probability': f'{1 - float(row["score"]):.4f}',
      'margin': '', 'entropy': '',
      'why': (f'check this label: filed as {row["given"]} ({row["split"]}), the model '
              f'says {row["suggested"]}'), 'label': ''} for row in suspects[:count]]


def shortlist_pool(model_dir: str, records: tf.data.Dataset, skip: Set[bytes], size: int,
                   method: str) -> Tuple[Optional[Dict[str, np.ndarray]], Counter]:
  """(shortlist, counts): the `size` most uncertain images of `records` not in
  `skip`, each once, as arrays (image, image_id, source_path, probabilities,
  embedding; most uncertain first), and the counts of what was read."""
  spec = {name: tf.io.FixedLenFeature([], tf.string) for name in _TEXT_FIELDS}
  parsed = records.batch(BATCH_SIZE).map(
      lambda batch: {'serialized': batch, **tf.io.parse_example(batch, spec)})
  counts = collections.Counter()
  seen: Set[bytes] = set()
  shortlist: Optional[Dict[str, np.ndarray]] = None
  with signatures.session_function(model_dir, signatures.EMBEDDINGS_SIGNATURE) as embed:
    for batch in parsed.as_numpy_iterator():
      keep = np.zeros(len(batch[_ID]), bool)
      for i, image_id in enumerate(batch[_ID]):
        reason = ('already_labeled' if image_id in skip else
                  'duplicates' if image_id in seen else 'pool')
        counts[reason] += 1
        keep[i] = reason == 'pool'
        seen.add(image_id)
      if not keep.any():
        continue
      scored = {name: batch[name][keep] for name in _TEXT_FIELDS}
      scored.update(embed(batch['serialized'][keep]))
      if shortlist is not None:
        scored = {name: np.concatenate([shortlist[name], scored[name]]) for name in scored}
      kept = ranking.most_uncertain(ranking.uncertainty(scored['probabilities'], method),
                                    scored[_ID], size)
      shortlist = {name: values[kept] for name, values in scored.items()}
  return shortlist, counts


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
  """`text`, cut with an ellipsis to fit `width` pixels."""
  while draw.textlength(text) > width and len(text) > 1:
    text = text[:-2] + '…'
  return text


def contact_sheet(images: List[bytes], captions: List[List[str]]) -> Image.Image:
  """Thumbnails in rank order, upright (EXIF) and enlarged or shrunk to the
  cell, each over its caption lines."""
  columns = max(1, min(COLUMNS, len(images)))
  rows = max(1, -(-len(images) // columns))
  cell_height = THUMBNAIL_SIZE + CAPTION_HEIGHT
  sheet = Image.new('RGB', (columns * THUMBNAIL_SIZE, rows * cell_height), 'white')
  draw = ImageDraw.Draw(sheet)
  for index, (encoded, lines) in enumerate(zip(images, captions)):
    x, y = (index % columns) * THUMBNAIL_SIZE, (index // columns) * cell_height
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(encoded))).convert('RGB')
    small = max(image.size) < THUMBNAIL_SIZE     # e.g. 28 px: keep its pixels sharp
    image = ImageOps.contain(image, (THUMBNAIL_SIZE - 4, THUMBNAIL_SIZE - 4),
                             Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)
    sheet.paste(image, (x + (THUMBNAIL_SIZE - image.width) // 2,
                        y + (THUMBNAIL_SIZE - image.height) // 2))
    draw.multiline_text(
        (x + 3, y + THUMBNAIL_SIZE),
        '\n'.join(_fit(draw, line, THUMBNAIL_SIZE - 6) for line in lines),
        fill='black', spacing=1)
  return sheet


def queue_rows(picks: List[ranking.Pick], shortlist: Dict[str, np.ndarray],
               class_names: List[str], unlabeled_dir: str, pool_size: int) -> List[Dict[str, Any]]:
  """One CSV row per pick."""
  rows = []
  for rank, pick in enumerate(picks, start=1):
    probabilities = shortlist['probabilities'][pick.index]
    first, second = np.argsort(-probabilities, kind='stable')[:2]
    source = shortlist[_SOURCE][pick.index].decode('utf-8')
    why = f'{class_names[first]} or {class_names[second]}? ' + (
        f'the most uncertain of {pool_size}' if rank == 1 else
        f'#{pick.uncertainty_rank} most uncertain of {pool_size}, '
        f'{pick.distance:.2f} from the nearest earlier pick')
    rows.append({
        'rank': rank, 'path': os.path.join(unlabeled_dir, source), 'source_path': source,
        'image_id': shortlist[_ID][pick.index].decode('utf-8'),
        'predicted': class_names[first],
        'probability': f'{probabilities[first]:.4f}',
        'runner_up': class_names[second],
        'runner_up_probability': f'{probabilities[second]:.4f}',
        'margin': f'{probabilities[first] - probabilities[second]:.4f}',
        'entropy': f'{ranking.uncertainty(probabilities[np.newaxis], "entropy")[0]:.4f}',
        'why': why, 'label': ''})
  return rows


class Executor(base_executor.BaseExecutor):
  """Ranks the unlabeled split (ranking.py says how); writes the queue's files."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    splits = artifact_utils.decode_split_names(examples.split_names)
    if UNLABELED_SPLIT not in splits:
      raise ValueError(
          f'LabelQueue ranks the examples\' {UNLABELED_SPLIT!r} split, and these '
          f'examples have none (splits: {", ".join(splits)}); run the pipeline with '
          'a folder of unlabeled images (--unlabeled DIR, data.unlabeled_path).')
    model_dir = path_utils.serving_model_path(
        artifact_utils.get_single_uri(input_dict[spec.MODEL_KEY]))
    class_names = artifact_readers.class_names(
        artifact_utils.get_single_uri(input_dict[spec.TRANSFORM_GRAPH_KEY]))
    queue_size = int(exec_properties[spec.QUEUE_SIZE_KEY])
    candidate_factor = int(exec_properties[spec.CANDIDATE_FACTOR_KEY])
    method = exec_properties[spec.UNCERTAINTY_KEY]
    unlabeled_dir = exec_properties[spec.UNLABELED_DIR_KEY]
    checks = []
    if input_dict.get(spec.MODEL_RUN_KEY) and exec_properties.get(spec.CHECK_LABELS_KEY):
      checks = check_label_rows(artifact_utils.get_single_uri(input_dict[spec.MODEL_RUN_KEY]),
                                int(exec_properties[spec.CHECK_LABELS_KEY]),
                                exec_properties.get(spec.LABELED_DIR_KEY) or '')

    labeled, check_images = example_splits.ids_and_images(
        examples.uri, [split for split in splits if split != UNLABELED_SPLIT],
        {row['image_id'].encode() for row in checks})
    shortlist, counts = shortlist_pool(
        model_dir, example_splits.split_records(examples.uri, UNLABELED_SPLIT), labeled,
        queue_size * candidate_factor, method)
    picks = [] if shortlist is None else ranking.select(
        shortlist['probabilities'], shortlist['embedding'], shortlist[_ID],
        queue_size, candidate_factor, method)
    rows = checks + queue_rows(picks, shortlist, class_names, unlabeled_dir, counts['pool'])
    for rank, row in enumerate(rows, start=1):
      row['rank'] = rank

    output = artifact_utils.get_single_instance(output_dict[spec.QUEUE_KEY])
    with tf.io.gfile.GFile(os.path.join(output.uri, QUEUE_CSV), 'w') as f:
      writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
      writer.writeheader()
      writer.writerows(safe_text.spreadsheet_row(row) for row in rows)
    sheet = contact_sheet(
        [check_images[row['image_id'].encode()] for row in checks] +
        [shortlist[IMAGE_FEATURE][pick.index] for pick in picks],
        [[f'#{row["rank"]}  check label', f'filed: {row["runner_up"]}',
          f'model: {row["predicted"]}'] for row in checks] +
        [[f'#{row["rank"]}  margin {row["margin"]}', row['predicted'],
          f'/ {row["runner_up"]}'] for row in rows[len(checks):]])
    buffer = io.BytesIO()
    sheet.save(buffer, format='PNG')
    with tf.io.gfile.GFile(os.path.join(output.uri, CONTACT_SHEET), 'wb') as f:
      f.write(buffer.getvalue())
    summary = {
        'unlabeled_examples': sum(counts.values()),
        'skipped_already_labeled': counts['already_labeled'],
        'skipped_duplicates': counts['duplicates'],
        'pool_images': counts['pool'],
        'candidates': 0 if shortlist is None else len(shortlist[_ID]),
        'queued': len(rows), 'labels_to_check': len(checks),
        'uncertainty': method, 'queue_size': queue_size,
        'candidate_factor': candidate_factor, 'unlabeled_dir': unlabeled_dir,
        'class_names': class_names, 'model': model_dir,
    }
    with tf.io.gfile.GFile(os.path.join(output.uri, SUMMARY_JSON), 'w') as f:
      json.dump(summary, f, indent=1)
    output.set_int_custom_property(QUEUED_PROPERTY, len(rows))
    output.set_int_custom_property(CHECK_LABELS_PROPERTY, len(checks))
    output.set_int_custom_property('pool_images', counts['pool'])
    logging.info(
        'LabelQueue: %d labels to check first; %d unlabeled examples, %d already labeled and %d repeats '
        'skipped; %d scored, the %d most uncertain (%s) shortlisted, %d queued by '
        'diversity among them: %s', len(checks), summary['unlabeled_examples'],
        counts['already_labeled'], counts['duplicates'], counts['pool'],
        summary['candidates'], method, len(rows), os.path.join(output.uri, QUEUE_CSV))
