"""The Trainer's module file run alone by TFX's Trainer executor, over real
TFRecords and a real transform graph: the paths the pipeline's small default
run does not take (fine-tuning), and the data-quality audit's files."""

import csv
import json
import os

import numpy as np
import tensorflow as tf
from tfx.components.trainer import executor as trainer_executor
from tfx.types import standard_artifacts
from tfx.utils import json_utils

from components import contracts
from models import signatures
from models.trainer import data_quality
from pipeline import dag

from helpers import (REPO_ROOT, analyze_and_transform, artifact, model_settings,
                     sample_bytes, write_examples_split)

CLASSES = ['bag', 'trouser']
IMAGE_SIZE = 32


def test_fine_tuning_runs_its_epochs_the_model_exports_and_leakage_is_found(tmp_path):
  rows = [(sample_bytes(label, i), label) for label in CLASSES for i in range(6)]
  _, transform_dir = analyze_and_transform(rows, IMAGE_SIZE, CLASSES, with_names=True)
  examples_uri = str(tmp_path / 'examples')
  # Every eval image is a copy of a train image: leakage the audit must name.
  for split in ('train', 'eval'):
    write_examples_split(examples_uri, split, [
        (image, label, f'{split}/{label}/{i}.png') for i, (image, label) in enumerate(rows)])
  model = artifact(standard_artifacts.Model, str(tmp_path / 'model'))
  model_run = artifact(standard_artifacts.ModelRun, str(tmp_path / 'model_run'))
  config = model_settings(
      f'model.image_size={IMAGE_SIZE}', 'model.weights=none', 'training.batch_size=4',
      'training.fine_tune_epochs=2', 'training.max_steps_per_epoch=2',
      class_names=CLASSES)

  trainer_executor.GenericExecutor().Do(
      {'examples': [artifact(standard_artifacts.Examples, examples_uri, ['train', 'eval'])],
       'transform_graph': [artifact(standard_artifacts.TransformGraph, transform_dir)]},
      {'model': [model], 'model_run': [model_run]},
      {'module_file': os.path.join(REPO_ROOT, dag.TRAINER_MODULE),
       'custom_config': json_utils.dumps(config.to_custom_config()),
       'train_args': '{"splits": ["train"]}', 'eval_args': '{"splits": ["eval"]}'})

  serving_dir = os.path.join(model.uri, 'Format-Serving')
  with open(os.path.join(serving_dir, contracts.SAVED_MODEL_EXTRAS_DIR, contracts.TRAINING_HISTORY_FILE)) as f:
    history = json.load(f)
  assert history['train_images'] == len(rows)
  assert len(history['fine_tune']['loss']) == 2
  assert all(np.isfinite(history['fine_tune']['loss']))
  assert all(seconds > 0 for seconds in history['fine_tune']['seconds'])
  serve = tf.saved_model.load(serving_dir).signatures[signatures.SERVING_SIGNATURE]
  outputs = serve(images=tf.constant([image for image, _ in rows[:3]]))
  assert outputs['probabilities'].shape == (3, len(CLASSES))
  assert set(outputs['class_name'].numpy()) <= {name.encode() for name in CLASSES}

  audit_dir = os.path.join(model_run.uri, contracts.DATA_QUALITY_DIR)
  with open(os.path.join(audit_dir, contracts.NEAR_DUPLICATES_CSV)) as f:
    pairs = {(row['source_path_a'], row['source_path_b'])
             for row in csv.DictReader(f) if row['kind'] == data_quality.LEAKAGE}
  assert pairs >= {(f'train/{label}/{i}.png', f'eval/{label}/{i}.png')
                   for i, (_, label) in enumerate(rows)}
  assert history['data_quality']['images'] == 2 * len(rows)
  assert history['feature_cache']['eval_images'] == len(rows)
  with open(os.path.join(audit_dir, contracts.SUSPECT_LABELS_CSV)) as f:
    assert next(csv.reader(f)) == data_quality.SUSPECT_COLUMNS
