"""The LabelQueue: ranking on known numbers, the executor over a real SavedModel
and real TFRecords, the feedback loop docs/labeling.md shows, and its output
on the e2e run."""

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from components import contracts
from components import example_splits
from components.contracts import UNLABELED_LABEL, UNLABELED_SPLIT
from components.label_queue import component
from components.label_queue import executor
from components.label_queue import ranking
from components.label_queue import spec
from models import signatures
from models.trainer import data_quality

from helpers import (REPO_ROOT, TRAINED_CLASSES as CLASSES, artifact, input_channels,
                     sample_bytes, write_examples_split)

LABELING_DOC = os.path.join(REPO_ROOT, 'docs', 'labeling.md')


def _probabilities(top: np.ndarray, num_classes: int = 3) -> np.ndarray:
  """Rows whose top class has probability `top`, the rest spread evenly."""
  rest = (1.0 - top[:, None]) / (num_classes - 1)
  return np.concatenate([top[:, None], np.repeat(rest, num_classes - 1, 1)], 1)


def test_margin_and_entropy_rank_the_unsure_first_and_differ_where_they_should():
  probabilities = np.array([[0.9, 0.05, 0.05, 0.0], [0.5, 0.5, 0.0, 0.0],
                            [0.4, 0.2, 0.2, 0.2]])
  margin = ranking.uncertainty(probabilities, 'margin')
  entropy = ranking.uncertainty(probabilities, 'entropy')
  # A tie between two classes is the most uncertain margin; spreading over all
  # four classes is the most uncertain entropy.
  assert list(np.argsort(-margin)) == [1, 2, 0]
  assert list(np.argsort(-entropy)) == [2, 1, 0]
  np.testing.assert_allclose(margin, [0.15, 1.0, 0.8])
  np.testing.assert_allclose(entropy[1], 0.5)        # log 2 / log 4
  with pytest.raises(ValueError, match='margin'):
    ranking.uncertainty(probabilities, 'variance')


def test_queue_is_diverse_not_twenty_near_duplicates():
  rng = np.random.default_rng(0)
  # 20 near-copies of one very uncertain image, and 5 distinct, a bit less uncertain.
  copies = np.ones([20, 8]) + rng.normal(size=[20, 8]) * 1e-3
  distinct = np.eye(8)[:5] * 5
  embeddings = np.concatenate([copies, distinct])
  probabilities = _probabilities(np.array([0.34] * 20 + [0.40] * 5))
  ids = [f'id{i}' for i in range(25)]
  queue = ranking.select(probabilities, embeddings, ids, queue_size=6,
                         candidate_factor=5, method='margin')
  indices = [pick.index for pick in queue]
  assert sum(index < 20 for index in indices) == 1          # one of the copies
  assert set(indices) >= set(range(20, 25))                 # and every distinct one
  assert queue[0].uncertainty_rank == 1 and np.isnan(queue[0].distance)
  assert all(pick.uncertainty_rank > 20 for pick in queue[1:])  # passed over the copies
  plain = np.argsort(-ranking.uncertainty(probabilities, 'margin'), kind='stable')[:6]
  assert all(index < 20 for index in plain)                 # what uncertainty alone picks


def test_exact_duplicates_count_once_and_the_order_is_deterministic():
  rng = np.random.default_rng(1)
  embeddings = rng.normal(size=[30, 4])
  probabilities = _probabilities(rng.uniform(0.34, 0.99, 30))
  ids = [f'id{i % 15}' for i in range(30)]                 # each image twice
  queue = ranking.select(probabilities, embeddings, ids, 10, 2, 'entropy')
  assert len({ids[pick.index] for pick in queue}) == len(queue) == 10
  assert all(pick.index < 15 for pick in queue)             # the first copy is kept
  assert queue == ranking.select(probabilities, embeddings, ids, 10, 2, 'entropy')


def test_a_shortlist_kept_over_batches_is_the_shortlist_of_the_whole_pool():
  rng = np.random.default_rng(2)
  scores = rng.choice([0.2, 0.5, 0.7, 0.9], size=200)      # many ties
  ids = np.array([f'id{i}' for i in range(200)], dtype=object)
  kept = np.array([], int)
  for start in range(0, 200, 64):
    merged = np.concatenate([kept, np.arange(start, min(start + 64, 200))])
    kept = merged[ranking.most_uncertain(scores[merged], ids[merged], 30)]
  np.testing.assert_array_equal(kept, ranking.most_uncertain(scores, ids, 30))


def _run(trained, examples, output_uri, unlabeled_dir, model_run=None, **knobs):
  """The executor on these examples; `model_run`: the Trainer's audit folder."""
  model_uri, transform_dir = trained
  os.makedirs(output_uri)
  queue = artifact(standard_artifacts.InferenceResult, output_uri)
  inputs = {spec.MODEL_KEY: [artifact(standard_artifacts.Model, model_uri)],
            spec.EXAMPLES_KEY: [examples],
            spec.TRANSFORM_GRAPH_KEY: [artifact(standard_artifacts.TransformGraph,
                                                transform_dir)]}
  if model_run:
    inputs[spec.MODEL_RUN_KEY] = [artifact(standard_artifacts.ModelRun, model_run)]
  executor.Executor().Do(
      inputs, {spec.QUEUE_KEY: [queue]},
      {spec.UNLABELED_DIR_KEY: unlabeled_dir, spec.QUEUE_SIZE_KEY: 5,
       spec.CANDIDATE_FACTOR_KEY: 2, spec.UNCERTAINTY_KEY: 'margin', **knobs})
  return queue


@pytest.fixture(scope='module')
def queued(trained, tmp_path_factory):
  """The executor over train/eval/unlabeled splits: 12 unlabeled images, one
  of them also labeled (train) and one stored twice."""
  root = tmp_path_factory.mktemp('queue')
  labeled = {'train': [(sample_bytes(label, 0), label, f'{label}/0.png') for label in CLASSES],
             'eval': [(sample_bytes(label, 1), label, f'{label}/1.png') for label in CLASSES]}
  pool = [(sample_bytes(label, i), f'{label[0]}{i}.png') for label in CLASSES for i in range(2, 6)]
  pool[1] = (labeled['train'][0][0], pool[1][1])           # already labeled
  pool.append((pool[6][0], 'copy.png'))                    # a repeat
  unlabeled_dir = root / 'unlabeled'
  unlabeled_dir.mkdir()
  for image, name in pool:
    (unlabeled_dir / name).write_bytes(image)
  examples_uri = str(root / 'examples')
  for split, records in labeled.items():
    write_examples_split(examples_uri, split, records)
  write_examples_split(examples_uri, UNLABELED_SPLIT,
               [(image, UNLABELED_LABEL, name) for image, name in pool])
  examples = artifact(standard_artifacts.Examples, examples_uri,
                       ['train', 'eval', UNLABELED_SPLIT])
  queue = _run(trained, examples, str(root / 'out'), str(unlabeled_dir))
  with open(os.path.join(queue.uri, contracts.QUEUE_CSV), newline='') as f:
    rows = list(csv.DictReader(f))
  return queue, rows, pool, str(unlabeled_dir)


def test_executor_queues_the_signature_ranking_of_the_new_images(trained, queued):
  queue, rows, pool, unlabeled_dir = queued
  with open(os.path.join(queue.uri, executor.SUMMARY_JSON)) as f:
    summary = json.load(f)
  assert (summary['unlabeled_examples'], summary['skipped_already_labeled'],
          summary['skipped_duplicates'], summary['pool_images'], summary['queued']) == (
              13, 1, 1, 11, 5)
  assert queue.get_int_custom_property(contracts.QUEUED_PROPERTY) == 5

  # The same ranking from the signature loaded the other way (TF2 loader).
  fresh = [(image, name) for i, (image, name) in enumerate(pool) if i != 1][:-1]
  embed = tf.saved_model.load(os.path.join(trained[0], 'Format-Serving')).signatures[
      signatures.EMBEDDINGS_SIGNATURE]
  serialized = [tf.train.Example(features=tf.train.Features(feature={
      'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
  })).SerializeToString() for image, _ in fresh]
  outputs = {key: value.numpy() for key, value in embed(examples=tf.constant(serialized)).items()}
  expected = ranking.select(outputs['probabilities'], outputs['embedding'],
                            [name for _, name in fresh], 5, 2, 'margin')
  assert [row['source_path'] for row in rows] == [fresh[pick.index][1] for pick in expected]

  assert [row['rank'] for row in rows] == ['1', '2', '3', '4', '5']
  assert list(rows[0]) == executor.CSV_COLUMNS
  for row, pick in zip(rows, expected):
    image = open(row['path'], 'rb').read()
    assert row['path'] == os.path.join(unlabeled_dir, row['source_path'])
    assert row['image_id'] == hashlib.sha256(image).hexdigest()
    probabilities = outputs['probabilities'][pick.index]
    assert row['predicted'] == CLASSES[np.argmax(probabilities)]
    assert float(row['probability']) == pytest.approx(probabilities.max(), abs=1e-3)
    assert float(row['margin']) == pytest.approx(
        float(row['probability']) - float(row['runner_up_probability']), abs=2e-4)
    assert row['predicted'] in row['why'] and row['label'] == ''
  assert 'the most uncertain of 11' in rows[0]['why']

  sheet = Image.open(os.path.join(queue.uri, contracts.CONTACT_SHEET))
  assert sheet.format == 'PNG'
  assert sheet.size == (5 * executor.THUMBNAIL_SIZE,
                        executor.THUMBNAIL_SIZE + executor.CAPTION_HEIGHT)
  assert len(set(np.asarray(sheet.convert('L')).ravel())) > 2     # not a blank sheet


def test_labels_to_check_come_first_with_their_labeled_file(trained, queued, tmp_path):
  """The Trainer's audit lists two suspect labels; with check_labels=1 the
  most likely wrong one heads the queue, then the same five new images."""
  _, new_rows, _, unlabeled_dir = queued
  examples_uri = os.path.join(os.path.dirname(os.path.dirname(new_rows[0]['path'])),
                              'examples')
  examples = artifact(standard_artifacts.Examples, examples_uri,
                      ['train', 'eval', UNLABELED_SPLIT])
  suspect = sample_bytes('bag', 1)                       # eval, filed as bag
  model_run = tmp_path / 'model_run'
  audit_dir = model_run / contracts.DATA_QUALITY_DIR
  audit_dir.mkdir(parents=True)
  with open(audit_dir / contracts.SUSPECT_LABELS_CSV, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(data_quality.SUSPECT_COLUMNS)
    writer.writerow([1, 'bag/1.png', 'eval', hashlib.sha256(suspect).hexdigest(), 'bag',
                     'trouser', '0.9100', '0.8800'])
    writer.writerow([2, 'sneaker/0.png', 'train', 'unused', 'sneaker', 'bag', '0.5', '0.5'])
  queue = _run(trained, examples, str(tmp_path / 'out'), unlabeled_dir, str(model_run),
               **{spec.LABELED_DIR_KEY: '/data/clothes', spec.CHECK_LABELS_KEY: 1})
  with open(os.path.join(queue.uri, contracts.QUEUE_CSV), newline='') as f:
    rows = list(csv.DictReader(f))
  check = rows[0]
  assert (check['rank'], check['path'], check['predicted'], check['runner_up'],
          check['runner_up_probability']) == ('1', '/data/clothes/bag/1.png', 'trouser',
                                              'bag', '0.0900')
  assert check['why'] == 'check this label: filed as bag (eval), the model says trouser'
  assert [row['source_path'] for row in rows[1:]] == [row['source_path'] for row in new_rows]
  assert [row['rank'] for row in rows] == ['1', '2', '3', '4', '5', '6']
  assert queue.get_int_custom_property(contracts.CHECK_LABELS_PROPERTY) == 1
  sheet = Image.open(os.path.join(queue.uri, contracts.CONTACT_SHEET))
  assert sheet.size == (5 * executor.THUMBNAIL_SIZE,
                        2 * (executor.THUMBNAIL_SIZE + executor.CAPTION_HEIGHT))


def test_executor_refuses_examples_without_an_unlabeled_split(trained, tmp_path):
  write_examples_split(str(tmp_path / 'examples'), 'train', [(sample_bytes('bag', 0), 'bag', 'bag/0.png')])
  examples = artifact(standard_artifacts.Examples, str(tmp_path / 'examples'), ['train'])
  with pytest.raises(ValueError, match=r"'unlabeled' split.*--unlabeled DIR"):
    _run(trained, examples, str(tmp_path / 'out'), '')


def test_csv_cells_that_would_start_a_formula_are_quoted(trained, tmp_path):
  """Unlabeled files named `=1+1.png` and `@SUM(1+1).png` are formulas to a
  spreadsheet: their `source_path` cells get a leading quote; `path` (absolute,
  what the documented move reads) is the real file."""
  names = ['=1+1.png', '@SUM(1+1).png', 'plain.png']
  examples_uri = str(tmp_path / 'examples')
  write_examples_split(examples_uri, 'train',
               [(sample_bytes(label, 0), label, f'{label}/0.png') for label in CLASSES])
  write_examples_split(examples_uri, UNLABELED_SPLIT, [
      (sample_bytes(label, 2), UNLABELED_LABEL, name) for label, name in zip(CLASSES, names)])
  examples = artifact(standard_artifacts.Examples, examples_uri, ['train', UNLABELED_SPLIT])
  unlabeled_dir = str(tmp_path / 'unlabeled')
  queue = _run(trained, examples, str(tmp_path / 'out'), unlabeled_dir)
  with open(os.path.join(queue.uri, contracts.QUEUE_CSV), newline='') as f:
    rows = list(csv.DictReader(f))
  assert sorted(row['source_path'] for row in rows) == [
      "'=1+1.png", "'@SUM(1+1).png", 'plain.png']
  assert sorted(row['path'] for row in rows) == sorted(
      os.path.join(unlabeled_dir, name) for name in names)
  assert not [cell for row in rows for cell in row.values()
              if cell.startswith(('=', '+', '-', '@', '\t', '\r'))]


def test_the_documented_move_puts_labeled_rows_into_class_folders(queued, tmp_path):
  """docs/labeling.md's command, run as shown: rows with a label move into
  data/<label>/, the rest stay; an unknown class folder is an error."""
  queue, rows, _, unlabeled_dir = queued
  pool = shutil.copytree(unlabeled_dir, tmp_path / 'unlabeled')
  data = tmp_path / 'data'
  for name in CLASSES:
    (data / name).mkdir(parents=True)
  filled = tmp_path / 'label_queue.csv'

  def fill(labels):
    """The queue as a user saves it: its `label` column filled in."""
    with open(filled, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=executor.CSV_COLUMNS)
      writer.writeheader()
      writer.writerows({**row, 'path': os.path.join(pool, row['source_path']), 'label': label}
                       for row, label in zip(rows, labels))
  with open(LABELING_DOC, encoding='utf-8') as f:
    (block,) = [b for b in re.findall(r'^```sh\n(.*?)^```$', f.read(), re.M | re.S)
                if 'shutil.move' in b]
  command = '\n'.join(line for line in block.splitlines()
                      if not line.startswith(('queue=', 'data=')))

  def move():
    return subprocess.run(['bash', '-c', command], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**os.environ, 'queue': str(filled),
                                          'data': str(data)})

  labels = ['bag', 'trouser', '', '', '']
  fill(labels)
  moved = move()
  assert moved.returncode == 0, moved.stderr
  for row, label in zip(rows, labels):
    moved = data / label / row['source_path']
    assert moved.exists() == bool(label)
    assert os.path.exists(os.path.join(pool, row['source_path'])) == (not label)
  fill(['', '', 'sandal', '', ''])            # no such class folder
  assert move().returncode != 0
  assert os.path.exists(os.path.join(pool, rows[2]['source_path']))


def test_component_wires_the_spec_and_the_executor():
  queue = component.LabelQueue(**input_channels(spec.LabelQueueSpec), unlabeled_dir='/u',
                               queue_size=20, candidate_factor=5, uncertainty='margin')
  assert set(queue.inputs) == {spec.MODEL_KEY, spec.EXAMPLES_KEY, spec.TRANSFORM_GRAPH_KEY,
                               spec.MODEL_RUN_KEY}
  assert queue.outputs[spec.QUEUE_KEY].type is standard_artifacts.InferenceResult
  assert queue.exec_properties == {
      spec.UNLABELED_DIR_KEY: '/u', spec.LABELED_DIR_KEY: '', spec.CHECK_LABELS_KEY: 0,
      spec.QUEUE_SIZE_KEY: 20, spec.CANDIDATE_FACTOR_KEY: 5, spec.UNCERTAINTY_KEY: 'margin'}
  assert queue.executor_spec.executor_class is executor.Executor


def test_e2e_run_writes_a_ranked_queue_of_unlabeled_files(e2e_first_run, e2e_workspace):
  assert e2e_first_run.label_queue_uri
  folder = e2e_first_run.label_queue_uri
  with open(os.path.join(folder, contracts.QUEUE_CSV), newline='') as f:
    rows = list(csv.DictReader(f))
  with open(os.path.join(folder, executor.SUMMARY_JSON)) as f:
    summary = json.load(f)
  pool = sorted(os.listdir(e2e_workspace['unlabeled']))
  assert summary['pool_images'] == len(pool)
  assert len(rows) == summary['queued']
  assert [int(row['rank']) for row in rows] == list(range(1, len(rows) + 1))
  # The audit's labels to check first (tests/test_data_quality.py), then the new images.
  checks = rows[:summary['labels_to_check']]
  assert all(row['why'].startswith('check this label') for row in checks)
  assert all(os.path.isfile(row['path']) and row['path'].startswith(e2e_workspace['data'])
             for row in checks)
  rows = rows[len(checks):]
  assert len(rows) == min(summary['queue_size'], len(pool))
  assert len({row['image_id'] for row in rows}) == len(rows)
  for row in rows:
    assert row['path'] == os.path.join(e2e_workspace['unlabeled'], row['source_path'])
    assert os.path.isfile(row['path'])
    assert float(row['probability']) >= float(row['runner_up_probability'])
  sheet = Image.open(os.path.join(folder, contracts.CONTACT_SHEET))
  assert sheet.size == (executor.COLUMNS * executor.THUMBNAIL_SIZE,
                        -(-summary['queued'] // executor.COLUMNS)
                        * (executor.THUMBNAIL_SIZE + executor.CAPTION_HEIGHT))
  # ranking.py's order, on the pool scored afresh by the model the queue used.
  serialized = list(example_splits.split_records(e2e_first_run.examples_uri, UNLABELED_SPLIT)
                    .as_numpy_iterator())
  ids = [tf.train.Example.FromString(record).features.feature['image_id']
         .bytes_list.value[0].decode() for record in serialized]
  assert len(set(ids)) == len(ids) == summary['pool_images']
  with signatures.session_function(summary['model'], signatures.EMBEDDINGS_SIGNATURE) as embed:
    scored = embed(np.array(serialized, dtype=object))
  scores = dict(zip(ids, ranking.uncertainty(scored['probabilities'], summary['uncertainty'])))
  embeddings = scored['embedding'] / np.linalg.norm(scored['embedding'], axis=1, keepdims=True)
  vectors = dict(zip(ids, embeddings))
  candidates = sorted(scores, key=scores.get, reverse=True)[
      :summary['queue_size'] * summary['candidate_factor']]
  queued = [row['image_id'] for row in rows]
  # The first pick is the most uncertain image, every pick a candidate (one of
  # the queue_size x candidate_factor most uncertain) ...
  close = 1 - 1e-4     # relative: a confident model's margins are about 1e-3
  assert scores[queued[0]] >= scores[candidates[0]] * close
  assert min(scores[image_id] for image_id in queued) >= scores[candidates[-1]] * close
  # ... and each next pick the candidate left with the largest distance to
  # its nearest earlier pick times its uncertainty.
  for k in range(1, len(queued)):
    def weighted(image_id, picked=queued[:k]):
      return scores[image_id] * min(
          np.linalg.norm(vectors[image_id] - vectors[other]) for other in picked)
    left = [image_id for image_id in candidates if image_id not in queued[:k]]
    assert weighted(queued[k]) >= max(map(weighted, left)) * close, k
