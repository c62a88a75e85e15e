"""Trainer module: `run_fn` trains the classifier and exports the SavedModel.

Phase 1 trains the head on the frozen backbone; the optional phase 2 unfreezes
the top of the backbone (BatchNorm stays frozen) at a low learning rate. Both
phases stop early on the eval split and keep the best weights.
"""

import json
import logging
import os
import time
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.backbones import get_backbone
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


def _class_weights(labels: np.ndarray, num_classes: int) -> Dict[int, float]:
  """Inverse-frequency weights (mean 1 over present classes) for imbalance."""
  counts = np.bincount(labels, minlength=num_classes)
  present = counts > 0
  weights = np.zeros(num_classes)
  weights[present] = counts[present].sum() / (present.sum() * counts[present])
  return {i: float(w) for i, w in enumerate(weights)}


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

  train = _dataset(fn_args, fn_args.train_files, tf_transform_output,
                   training['batch_size'], shuffle=True, seed=training['seed'])
  evaluation = _dataset(fn_args, fn_args.eval_files, tf_transform_output,
                        training['batch_size'], shuffle=False, seed=0)
  train_labels = np.concatenate([y.numpy() for _, y in train])
  train_counts = np.bincount(train_labels, minlength=num_classes)
  logging.info('Train images per class: %s', dict(zip(class_names, train_counts.tolist())))
  class_weight = (_class_weights(train_labels, num_classes)
                  if training['class_weights'] else None)

  model = classifier.build_classifier(config, num_classes,
                                      preprocessing.TRANSFORMED_IMAGE_KEY)
  classifier.compile_classifier(model, training['learning_rate'])
  tensorboard = tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)
  fit_args = dict(train=train, evaluation=evaluation,
                  patience=training['early_stopping_patience'],
                  class_weight=class_weight, callbacks=[tensorboard],
                  steps_per_epoch=training['max_steps_per_epoch'])
  history = {'train_images': int(train_counts.sum()),
             'head': _fit(model, epochs=training['epochs'], **fit_args).history}

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
