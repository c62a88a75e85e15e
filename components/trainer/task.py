"""Trainer module: `run_fn` trains the classifier and exports the SavedModel.

Phase 1 trains the head on the frozen backbone: by default on the feature
cache (feature_cache.py, head.py), where the backbone runs once per image and
augmentation view, and, given an unlabeled split, semi-supervised (FixMatch);
with `training.feature_cache` off, through the whole model every epoch. The
optional phase 2 unfreezes the top of the backbone (BatchNorm stays frozen) at
a low learning rate. Both phases stop early on the eval split and keep the
best weights.

Splits: `fn_args.train_files[0]` is the labeled train split; any further
train files are the unlabeled split (pipeline/dag.py sets the Trainer's
`train_args.splits` to ['train', 'unlabeled'] when there is one).
"""

import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.backbones import get_backbone
from components.trainer import feature_cache
from components.trainer import head as head_lib
from components.trainer import model as classifier
from components.trainer import signatures
from components.transform import preprocessing

# Written into the model directory next to the SavedModel: what the run learned.
TRAINING_HISTORY_FILE = 'training_history.json'


def _dataset(fn_args: tfx.components.FnArgs, files: List[str],
             tf_transform_output: tft.TFTransformOutput, batch_size: int,
             shuffle: bool, seed: int) -> tf.data.Dataset:
  """One pass over transformed examples as (image, label id) batches."""
  return fn_args.data_accessor.tf_dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(
          batch_size=batch_size, label_key=preprocessing.TRANSFORMED_LABEL_KEY,
          num_epochs=1, shuffle=shuffle, shuffle_seed=seed),
      tf_transform_output.transformed_metadata.schema,
  ).map(lambda features, label: (
      features[preprocessing.TRANSFORMED_IMAGE_KEY], tf.reshape(label, [-1])))


def _images(dataset: tf.data.Dataset, labels: List[np.ndarray]) -> Iterator[tf.Tensor]:
  """The dataset's image batches; their labels are appended to `labels`."""
  for images, batch_labels in dataset:
    labels.append(batch_labels.numpy())
    yield images


def _train_head_on_cache(model, config, train, evaluation, unlabeled, summary_dir):
  """Phase 1 on the feature cache; returns (history, train labels)."""
  training, semi = config['training'], config['semi_supervised']
  extractor = classifier.feature_extractor(model)
  augmentation = model.get_layer(classifier.AUGMENTATION_LAYER)
  labels: List[np.ndarray] = []
  start = time.perf_counter()
  labeled = head_lib.LabeledViews(
      feature_cache.compute_views(extractor, _images(train, labels),
                                  [None] + [augmentation] * training['cached_views'],
                                  'labeled images'),
      np.concatenate(labels))
  labeled_seconds = time.perf_counter() - start
  eval_labels: List[np.ndarray] = []
  eval_features = feature_cache.compute_views(
      extractor, _images(evaluation, eval_labels), [None], 'eval images')[0]
  unlabeled_views = None
  if unlabeled is not None:
    strong = classifier.strong_augmentation(config)
    features = feature_cache.compute_views(
        extractor, _images(unlabeled, []), [None] + [strong] * semi['strong_views'],
        'unlabeled images')
    unlabeled_views = head_lib.UnlabeledViews(features[:1], features[1:])
  history = head_lib.train_head(
      classifier.head(model), labeled, config, unlabeled_views,
      (eval_features, np.concatenate(eval_labels)), summary_dir)
  # An epoch without the cache runs the backbone over every labeled image
  # once (and, semi-supervised, over a weak and a strong view of
  # `unlabeled_ratio` unlabeled images per labeled one).
  seconds_per_image = labeled_seconds / labeled.features.shape[0] / len(labeled.labels)
  images_per_epoch = len(labeled.labels) * (
      1 + (2 * semi['unlabeled_ratio'] if unlabeled is not None else 0))
  uncached_epoch = seconds_per_image * images_per_epoch
  cached_epoch = float(np.median(history['train_seconds']))
  cache = {'labeled_images': len(labeled.labels), 'views': labeled.features.shape[0],
           'unlabeled_images': (0 if unlabeled_views is None
                                else unlabeled_views.weak.shape[1]),
           'seconds': time.perf_counter() - start - sum(history['seconds']),
           'estimated_uncached_epoch_seconds': uncached_epoch,
           'cached_epoch_seconds': cached_epoch,
           'estimated_speedup_per_epoch': uncached_epoch / cached_epoch}
  logging.info('Feature cache built in %.1f s; a head epoch takes %.3f s on it '
               'against about %.2f s through the backbone (%.0fx).', cache['seconds'],
               cached_epoch, uncached_epoch, cache['estimated_speedup_per_epoch'])
  return history, cache, labeled.labels


class _EpochTimer(tf_keras.callbacks.Callback):
  """Adds each epoch's wall time to the history: `seconds` in all, and
  `train_seconds` spent on training batches before validation starts."""

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()
    self._train_end = None

  def on_test_begin(self, logs=None):
    self._train_end = self._train_end or time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    end = time.perf_counter()
    logs['seconds'] = end - self._start
    logs['train_seconds'] = (self._train_end or end) - self._start


def _keras_class_weight(labels: np.ndarray, num_classes: int,
                        training: Dict[str, Any]) -> Optional[Dict[int, float]]:
  if not training['class_weights']:
    return None
  return dict(enumerate(head_lib.class_weights(labels, num_classes).tolist()))


def _fit(model, train, evaluation, epochs, patience, class_weight, callbacks,
         steps_per_epoch):
  early_stopping = tf_keras.callbacks.EarlyStopping(
      monitor='val_loss', patience=patience, restore_best_weights=True)
  if steps_per_epoch:
    train = train.repeat()
  return model.fit(
      train, validation_data=evaluation, epochs=epochs,
      steps_per_epoch=steps_per_epoch or None, class_weight=class_weight,
      callbacks=[_EpochTimer(), early_stopping, *callbacks], verbose=2)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """TFX Trainer entry point."""
  config: Dict[str, Any] = fn_args.custom_config
  training = config['training']
  tf_keras.utils.set_random_seed(training['seed'])
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  class_names = preprocessing.read_class_names(fn_args.transform_output)
  num_classes = len(class_names)

  labeled_files, unlabeled_files = fn_args.train_files[:1], fn_args.train_files[1:]
  train = _dataset(fn_args, labeled_files, tf_transform_output,
                   training['batch_size'], shuffle=True, seed=training['seed'])
  evaluation = _dataset(fn_args, fn_args.eval_files, tf_transform_output,
                        training['batch_size'], shuffle=False, seed=0)
  unlabeled = None
  if unlabeled_files and config['semi_supervised']['enabled']:
    unlabeled = _dataset(fn_args, unlabeled_files, tf_transform_output,
                         training['batch_size'], shuffle=False, seed=0)
  elif unlabeled_files:
    logging.info('semi_supervised.enabled is off: the unlabeled split is not used.')

  model = classifier.build_classifier(config, num_classes,
                                      preprocessing.TRANSFORMED_IMAGE_KEY)
  classifier.compile_classifier(model, training['learning_rate'])
  tensorboard = tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)
  fit_args = dict(train=train, evaluation=evaluation,
                  patience=training['early_stopping_patience'],
                  callbacks=[tensorboard], steps_per_epoch=training['max_steps_per_epoch'])
  history: Dict[str, Any] = {}
  if training['feature_cache']:
    history['head'], history['feature_cache'], train_labels = _train_head_on_cache(
        model, config, train, evaluation, unlabeled, fn_args.model_run_dir)
    fit_args['class_weight'] = _keras_class_weight(train_labels, num_classes, training)
  else:
    if unlabeled is not None:
      raise ValueError('Semi-supervised training runs on the feature cache: '
                       'set training.feature_cache=true or semi_supervised.enabled=false.')
    train_labels = np.concatenate([y.numpy() for _, y in train])
    fit_args['class_weight'] = _keras_class_weight(train_labels, num_classes, training)
    history['head'] = _fit(model, epochs=training['epochs'], **fit_args).history
  train_counts = np.bincount(train_labels, minlength=num_classes)
  logging.info('Train images per class: %s', dict(zip(class_names, train_counts.tolist())))
  history['train_images'] = int(train_counts.sum())

  if training['fine_tune_epochs']:
    unfrozen = classifier.unfreeze_top(model, training['fine_tune_layers'])
    logging.info('Fine-tuning %d backbone layers at learning rate %g.', unfrozen,
                 training['fine_tune_learning_rate'])
    classifier.compile_classifier(model, training['fine_tune_learning_rate'])
    history['fine_tune'] = _fit(model, epochs=training['fine_tune_epochs'],
                                **fit_args).history

  model.tft_layer = tf_transform_output.transform_features_layer()
  normalize = get_backbone(config['model']['backbone']).normalize
  model.save(fn_args.serving_model_dir, save_format='tf',
             signatures=signatures.make_signatures(model, tf_transform_output,
                                                   class_names, normalize))
  extra_dir = os.path.join(fn_args.serving_model_dir, 'assets.extra')
  tf.io.gfile.makedirs(extra_dir)
  with tf.io.gfile.GFile(os.path.join(extra_dir, TRAINING_HISTORY_FILE), 'w') as f:
    json.dump(history, f, indent=1, default=float)
