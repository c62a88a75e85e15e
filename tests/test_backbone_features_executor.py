"""BackboneFeatures' executor alone, TFX style (real examples, a real transform
graph, the real backbone at 32 px, `Executor().Do` on DirectRunner), and the
Trainer's module file on its output: the step's features are the Trainer's
own, and a head fitted on them is the head fitted in the Trainer."""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer import executor as trainer_executor
from tfx.types import standard_artifacts
from tfx.utils import json_utils

from components import contracts
from components import example_splits
from components.backbone_features import component
from components.backbone_features import executor
from components.backbone_features import spec
from models import classifier
from models import preprocessing
from models import signatures
from models.trainer import feature_cache
from pipeline import dag
import tensorflow_transform as tft

from helpers import (REPO_ROOT, analyze_and_transform, artifact, input_channels,
                     model_settings, sample_bytes, write_examples_split)

CLASSES = ['bag', 'trouser']
IMAGE_SIZE = 32
SETTINGS = (f'model.image_size={IMAGE_SIZE}', 'training.batch_size=4')


def _rows(split, first, count):
  """(image, label, source path) rows in image-id order: the order the
  Trainer puts BackboneFeatures' records in, so both paths fit on one order."""
  rows = [(sample_bytes(label, i), label, f'{split}/{label}/{i}.png')
          for label in CLASSES for i in range(first, first + count)]
  return sorted(rows, key=lambda row: hashlib.sha256(row[0]).hexdigest())


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  """Examples (train: 6 images a class; eval: 3) and their transform graph."""
  root = tmp_path_factory.mktemp('backbone_features')
  splits = {'train': _rows('train', 0, 6), 'eval': _rows('eval', 6, 3)}
  _, transform_dir = analyze_and_transform([row[:2] for row in splits['train']], IMAGE_SIZE,
                                           CLASSES, with_names=True)
  examples_uri = str(root / 'examples')
  for split, rows in splits.items():
    write_examples_split(examples_uri, split, rows)
  return root, examples_uri, transform_dir, splits


def _embed(settings, examples_uri, transform_dir, labeled_splits, clean_splits, uri):
  features = artifact(standard_artifacts.Examples, uri)
  executor.Executor().Do(
      {spec.EXAMPLES_KEY: [artifact(standard_artifacts.Examples, examples_uri,
                                    ['train', 'eval'])],
       spec.TRANSFORM_GRAPH_KEY: [artifact(standard_artifacts.TransformGraph, transform_dir)]},
      {spec.FEATURES_KEY: [features]},
      {spec.CUSTOM_CONFIG_KEY: json.dumps(settings.to_custom_config()),
       spec.LABELED_SPLITS_KEY: json.dumps(labeled_splits),
       spec.CLEAN_SPLITS_KEY: json.dumps(clean_splits)})
  return features


@pytest.fixture(scope='module')
def features(inputs):
  root, examples_uri, transform_dir, _ = inputs
  settings = model_settings(*SETTINGS, class_names=CLASSES)
  return _embed(settings, examples_uri, transform_dir, ['train'], ['eval'],
                str(root / 'features'))


def test_each_image_gets_the_trainers_own_features_under_each_view(inputs, features):
  _, _, transform_dir, splits = inputs
  settings = model_settings(*SETTINGS, class_names=CLASSES)
  model = classifier.build_classifier(settings, len(CLASSES),
                                      preprocessing.TRANSFORMED_IMAGE_KEY)
  transform = tft.TFTransformOutput(transform_dir).transform_features_layer()
  embedder = feature_cache.Embedder(classifier.feature_extractor(model))
  dim = model.get_layer(classifier.POOLED_FEATURES_LAYER).output.shape[-1]
  assert features.split_names == '["train", "eval"]'
  labeled_views = feature_cache.labeled_views(
      settings, model.get_layer(classifier.AUGMENTATION_LAYER))
  for split, views in (('train', labeled_views), ('eval', [None])):
    rows = splits[split]
    images, label_ids = feature_cache.transformed_batch(transform, {
        preprocessing.IMAGE_KEY: tf.constant([[image] for image, _, _ in rows]),
        preprocessing.LABEL_KEY: tf.constant([[label] for _, label, _ in rows])})
    expected = embedder.embed(images, views)
    written = feature_cache.read_records(
        example_splits.split_files(features.uri, split), len(views), dim)
    position = {image_id: i for i, image_id in enumerate(written['image_id'])}
    order = [position[hashlib.sha256(image).hexdigest().encode()] for image, _, _ in rows]
    assert len(views) == (2 if split == 'train' else 1)   # clean and mirrored
    np.testing.assert_allclose(written['features'][:, order], expected, atol=1e-4)
    assert written['labels'][order].tolist() == label_ids.numpy().tolist()
    assert [path.decode() for path in written['source_path'][order]] == [
        path for _, _, path in rows]


def _train(tmp_path, examples, transform_dir, settings):
  model = artifact(standard_artifacts.Model, str(tmp_path / 'model'))
  trainer_executor.GenericExecutor().Do(
      {'examples': [examples],
       'transform_graph': [artifact(standard_artifacts.TransformGraph, transform_dir)]},
      {'model': [model],
       'model_run': [artifact(standard_artifacts.ModelRun, str(tmp_path / 'model_run'))]},
      {'module_file': os.path.join(REPO_ROOT, dag.TRAINER_MODULE),
       'custom_config': json_utils.dumps(settings.to_custom_config()),
       'train_args': '{"splits": ["train"]}', 'eval_args': '{"splits": ["eval"]}'})
  serving_dir = os.path.join(model.uri, 'Format-Serving')
  with open(os.path.join(serving_dir, contracts.SAVED_MODEL_EXTRAS_DIR,
                         contracts.TRAINING_HISTORY_FILE)) as f:
    history = json.load(f)
  return tf.saved_model.load(serving_dir).signatures[signatures.SERVING_SIGNATURE], history


def test_the_trainer_fits_on_the_steps_features_the_head_it_fits_on_pixels(
    inputs, features, tmp_path):
  _, examples_uri, transform_dir, splits = inputs
  raw = artifact(standard_artifacts.Examples, examples_uri, ['train', 'eval'])
  on_pixels, pixels_history = _train(tmp_path / 'pixels', raw, transform_dir,
                                     model_settings(*SETTINGS, class_names=CLASSES))
  on_features, features_history = _train(
      tmp_path / 'features', features, transform_dir,
      model_settings(*SETTINGS, 'training.beam_features=true', class_names=CLASSES))

  assert features_history['feature_cache']['source'] == 'BackboneFeatures'
  assert pixels_history['feature_cache']['source'] == 'trainer'
  for key in ('labeled_images', 'views', 'eval_images'):
    assert features_history['feature_cache'][key] == pixels_history['feature_cache'][key]
  for audit in (features_history['data_quality'], pixels_history['data_quality']):
    audit.pop('seconds')
  assert features_history['data_quality'] == pixels_history['data_quality']
  images = tf.constant([image for image, _, _ in splits['eval']])
  np.testing.assert_allclose(on_features(images=images)['probabilities'],
                             on_pixels(images=images)['probabilities'], atol=1e-4)


def test_a_split_the_examples_lack_fails_with_its_name(inputs, tmp_path):
  _, examples_uri, transform_dir, _ = inputs
  with pytest.raises(ValueError, match=r"no split \['unlabeled'\]"):
    _embed(model_settings(*SETTINGS, class_names=CLASSES), examples_uri, transform_dir,
           ['train'], ['eval', 'unlabeled'], str(tmp_path / 'features'))


def test_component_wiring():
  built = component.BackboneFeatures(
      **input_channels(spec.BackboneFeaturesSpec),
      custom_config={'image_size': IMAGE_SIZE}, labeled_splits=['train'],
      clean_splits=['eval'])
  assert built.outputs[spec.FEATURES_KEY].type == standard_artifacts.Examples
  assert json.loads(built.exec_properties[spec.CLEAN_SPLITS_KEY]) == ['eval']
