"""The data-quality audit (models/trainer/data_quality.py) on features
whose truth is known: flipped labels, planted copies and a far-away image;
and on a real run, through the label queue, the summary and the report."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from components import artifact_readers
from components import contracts
from components.label_queue import executor as label_queue
from models import neighbours
from models.trainer import data_quality
from pipeline import run_summary
from pipeline.config import DataQualityConfig

from helpers import make_e2e_workspace, run_e2e_pipeline, sample_bytes

CLASSES = ['a', 'b', 'c']
SETTINGS = DataQualityConfig(near_duplicate_similarity=0.95, near_duplicate_margin=0.08,
                             cross_class_duplicates='warn', outlier_mads=4.0)


def _images(seed=0, per_class=40, flipped=(3, 50, 97)):
  """Three well-separated clusters in 64-d; `flipped` images carry the next
  class's label; eval is the last fifth of each class."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(len(CLASSES), 64)) * 1.5
  truth = np.repeat(np.arange(len(CLASSES)), per_class)
  features = centers[truth] + rng.normal(size=(len(truth), 64))
  labels = truth.copy()
  labels[list(flipped)] = (truth[list(flipped)] + 1) % len(CLASSES)
  # Out-of-sample probabilities as a decent classifier gives them: mostly on
  # the true class, whatever the given label.
  probabilities = np.full((len(truth), len(CLASSES)), 0.05)
  probabilities[np.arange(len(truth)), truth] = 0.9
  splits = ['eval' if i % per_class >= per_class * 4 // 5 else 'train'
            for i in range(len(truth))]
  return features, labels, probabilities, splits


def _labeled(features, labels, probabilities, splits):
  return data_quality.LabeledImages(
      features=features, labels=labels, probabilities=probabilities, splits=splits,
      source_paths=[f'{CLASSES[label]}/{i}.png' for i, label in enumerate(labels)],
      image_ids=[f'id{i}' for i in range(len(labels))])


def _rows(folder, name):
  with open(os.path.join(folder, name)) as f:
    return list(csv.DictReader(f))


def test_flipped_labels_are_the_suspects_with_their_true_class_suggested(tmp_path):
  features, labels, probabilities, splits = _images()
  summary = data_quality.audit(_labeled(features, labels, probabilities, splits),
                               CLASSES, SETTINGS, str(tmp_path))
  rows = _rows(tmp_path, contracts.SUSPECT_LABELS_CSV)
  assert {row['source_path'] for row in rows} == {'b/3.png', 'c/50.png', 'a/97.png'}
  assert {(row['given'], row['suggested']) for row in rows} == {
      ('b', 'a'), ('c', 'b'), ('a', 'c')}
  assert all(float(row['score']) == pytest.approx(0.95) for row in rows)
  assert summary['suspect_labels'] == 3
  with open(tmp_path / contracts.DATA_QUALITY_SUMMARY_FILE) as f:
    assert json.load(f)['suspect_labels'] == 3


def test_copies_are_named_by_kind_and_a_far_image_is_an_outlier(tmp_path):
  features, labels, probabilities, splits = _images(flipped=())
  rng = np.random.default_rng(1)
  # 35 (eval, class a) copies image 0 (train, class a): leakage. 45 copies 44
  # (both train, class b) under label c: a conflict. 60 copies 41 (both
  # train, class b): a duplicate. 70 is far from everything.
  for copy, original in ((35, 0), (45, 44), (60, 41)):
    features[copy] = features[original] + rng.normal(size=64) * 0.05
  labels[45] = 2
  features[70] = rng.normal(size=64) * 40
  summary = data_quality.audit(_labeled(features, labels, probabilities, splits),
                               CLASSES, SETTINGS, str(tmp_path))
  pairs = {(row['kind'], row['source_path_a'], row['source_path_b'])
           for row in _rows(tmp_path, contracts.NEAR_DUPLICATES_CSV)}
  assert pairs == {('leakage', 'a/0.png', 'a/35.png'), ('conflict', 'b/44.png', 'c/45.png'),
                   ('duplicate', 'b/41.png', 'b/60.png')}
  assert summary['near_duplicates'] == {'conflict': 1, 'leakage': 1, 'duplicate': 1}
  outliers = _rows(tmp_path, contracts.OUTLIERS_CSV)
  assert [row['source_path'] for row in outliers] == ['b/70.png']


def test_stop_on_cross_class_duplicates_fails_after_writing_the_lists(tmp_path):
  features, labels, probabilities, splits = _images(flipped=())
  features[45] = features[44]
  labels[45] = 2
  with pytest.raises(data_quality.DataQualityError, match='b/44.png as b and c/45.png as c'):
    data_quality.audit(_labeled(features, labels, probabilities, splits), CLASSES,
                       dataclasses.replace(SETTINGS, cross_class_duplicates='stop'), str(tmp_path))
  assert len(_rows(tmp_path, contracts.NEAR_DUPLICATES_CSV)) == 1


def test_a_copy_far_closer_to_its_original_than_to_anything_else_is_a_near_duplicate():
  # Unit vectors at set similarities: 0 and 1 at 0.88, nothing else above
  # 0.6 of either (a margin of 0.28); 2, 3 and 4 all at 0.88 of each other
  # (no margin, below the absolute threshold).
  gram = np.full((7, 7), 0.3)
  gram[0, 1] = gram[1, 0] = 0.88
  for i in (2, 3, 4):
    for j in (2, 3, 4):
      gram[i, j] = 0.88
  np.fill_diagonal(gram, 1.0)
  features = np.linalg.cholesky(gram)
  similarities, indices = data_quality.nearest_neighbours(features, k=4)
  pairs = data_quality.near_duplicate_pairs(similarities, indices, 0.95, margin=0.08)
  assert [(a, b) for a, b, _ in pairs] == [(0, 1)]
  assert data_quality.near_duplicate_pairs(similarities, indices, 0.95) == []
  assert len(data_quality.near_duplicate_pairs(similarities, indices, 0.85, 0.08)) == 4


def test_neighbours_match_the_full_similarity_matrix_across_blocks(monkeypatch):
  monkeypatch.setattr(neighbours, 'BLOCK', 7)
  features = np.random.default_rng(2).normal(size=(30, 8))
  similarities, indices = data_quality.nearest_neighbours(features, k=4)
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  full = unit @ unit.T
  np.fill_diagonal(full, -np.inf)
  expected = np.argsort(-full, axis=1)[:, :4]
  np.testing.assert_array_equal(indices, expected)
  np.testing.assert_allclose(similarities, np.take_along_axis(full, expected, 1), rtol=1e-5)


@pytest.mark.pipeline
def test_a_real_run_lists_a_misfiled_image_first_and_a_re_encoded_copy(tmp_path):
  """The whole pipeline on the e2e images plus a bag filed under trouser and a
  bag saved again (the same pixels, other bytes: the content hash cannot tell)."""
  workspace = make_e2e_workspace(tmp_path)
  data = workspace['data']
  with open(os.path.join(data, 'trouser', 'misfiled_bag.png'), 'wb') as f:
    f.write(sample_bytes('bag', 30))
  original = os.path.join(data, 'bag', sorted(os.listdir(os.path.join(data, 'bag')))[0])
  Image.open(original).save(os.path.join(data, 'bag', 'resaved.png'), compress_level=1)
  with open(original, 'rb') as f, open(os.path.join(data, 'bag', 'resaved.png'), 'rb') as g:
    assert f.read() != g.read()

  # At the backbone's own image size: at the e2e runs' 64 pixels the head's
  # probabilities are too soft (0.72 for a bag) to call any label confidently wrong.
  summary = run_e2e_pipeline(workspace, 'model.image_size=0')

  suspects = artifact_readers.data_quality_list(summary.data_quality_dir,
                                              contracts.SUSPECT_LABELS_CSV)
  misfiled = [row for row in suspects if row['source_path'] == 'trouser/misfiled_bag.png']
  assert misfiled and misfiled[0]['suggested'] == 'bag' and int(misfiled[0]['rank']) <= 3
  pairs = artifact_readers.data_quality_list(summary.data_quality_dir,
                                           contracts.NEAR_DUPLICATES_CSV)
  copies = [row for row in pairs if {row['source_path_a'], row['source_path_b']} == {
      os.path.relpath(original, data), 'bag/resaved.png'}]
  assert copies and float(copies[0]['similarity']) > 0.999
  assert copies[0]['kind'] in (data_quality.LEAKAGE, data_quality.DUPLICATE)
  assert 'Data quality: ' in run_summary.format_summary(summary)

  with open(os.path.join(summary.label_queue_uri, label_queue.QUEUE_CSV), newline='') as f:
    queue = list(csv.DictReader(f))
  checks = [row for row in queue if row['why'].startswith('check this label')]
  assert queue[:len(checks)] == checks and len(checks) == min(len(suspects), 10)
  assert os.path.join(data, 'trouser', 'misfiled_bag.png') in [row['path'] for row in checks]
  with open(summary.report_path, encoding='utf-8') as f:
    report = f.read()
  assert 'Labels to check' in report and 'trouser/misfiled_bag.png' in report
