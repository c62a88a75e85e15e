"""Trainer module: `run_fn` trains the classifier and exports the SavedModel.

Phase 1 fits the head on the frozen backbone's cached features
(feature_cache.py: the backbone runs once per image and view; head.py: the
settings, and whether the unlabeled split helps, are chosen by
cross-validation on the train split, and calibrated on its held-out
predictions). On the same features, data_quality.py audits the labeled
images (suspect labels, near-duplicates, outliers) and ood.py fits the
detector of images of no known class. The optional phase 2 unfreezes the
top of the backbone (BatchNorm stays frozen) for `fine_tune_epochs` at a low
learning rate. Nothing is fitted or chosen on the eval split, so the Evaluator's gate
measures the model on images nothing was tuned on; the audit alone reads it,
to find leakage and wrong eval labels.

Splits: `fn_args.train_files[0]` is the labeled train split; any further
train files are the unlabeled split (pipeline/dag.py sets the Trainer's
`train_args.splits` to ['train', 'unlabeled'] when there is one and
semi_supervised.enabled). With `training.beam_features` the examples are
BackboneFeatures' output, the features of those splits instead of their
images, and phase 1 reads them instead of running the backbone.
"""

import dataclasses
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

from components import artifact_readers
from components import example_splits
from components.contracts import (DATA_QUALITY_DIR, IMAGE_ID_FEATURE, SAVED_MODEL_EXTRAS_DIR,
                                  SOURCE_PATH_FEATURE, TRAINING_HISTORY_FILE)
from models import classifier
from models import ood
from models import preprocessing
from models import signatures
from models.backbones import get_backbone
from models.settings import ModelSettings
from models.trainer import data_quality
from models.trainer import feature_cache
from models.trainer import head as head_lib

# ImageExampleGen's features that name each image in the audit's lists.
_NAME_KEYS = (SOURCE_PATH_FEATURE, IMAGE_ID_FEATURE)


def _dataset(fn_args: tfx.components.FnArgs, files: List[str],
             tf_transform_output: tft.TFTransformOutput,
             transform: tf_keras.layers.Layer, batch_size: int,
             shuffle: bool, seed: int, with_names: bool = False) -> tf.data.Dataset:
  """One pass over raw examples as (image, label id) batches, with
  `with_names` (image, label id, source path, image id) batches.

  Transform does not materialize its output: the transform graph (decode,
  resize, normalize, label ids) runs here, on several batches at once while
  the backbone works on the previous one, so only encoded images are held.
  `transform` is the run's one TFT layer (it loads the graph's SavedModel),
  the same the exported model carries.
  """
  @tf.autograph.experimental.do_not_convert
  def transformed(raw):
    batch = feature_cache.transformed_batch(transform, raw)
    if with_names:
      batch += tuple(tf.reshape(raw[key], [-1]) for key in _NAME_KEYS)
    return batch

  return fn_args.data_accessor.tf_dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(
          batch_size=batch_size, num_epochs=1, shuffle=shuffle, shuffle_seed=seed),
      tf_transform_output.raw_metadata.schema,
  ).map(transformed, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _images(dataset: tf.data.Dataset, columns: List[List[np.ndarray]]) -> Iterator[tf.Tensor]:
  """The dataset's image batches; each batch's other columns (labels, and
  names with `with_names`) are appended to the lists in `columns`."""
  for images, *others in dataset:
    for column, values in zip(columns, others):
      column.append(values.numpy())
    yield images


def _count(file_patterns: List[str]) -> int:
  """Examples in a split, for the progress lines: 0.3-0.5 s for 4,000 photos,
  against about 40 s of backbone for them."""
  return example_splits.count_records(
      [name for pattern in file_patterns for name in tf.io.gfile.glob(pattern)])


def _names(column: List[np.ndarray]) -> List[str]:
  return [name.decode('utf-8', 'replace') for name in np.concatenate(column)]


@dataclasses.dataclass
class _FeatureCache:
  """The backbone's features of every image phase 1 reads, with labels and
  names: computed here (_compute_cache) or read from BackboneFeatures'
  output (_read_cache, training.beam_features)."""
  labeled: head_lib.LabeledViews
  train_names: Dict[str, np.ndarray]          # source_path, image_id
  unlabeled: Optional[np.ndarray]
  eval_features: Optional[np.ndarray]
  eval_labels: Optional[np.ndarray]
  eval_names: Optional[Dict[str, np.ndarray]]
  facts: Dict[str, Any]                       # for the history


def _cache_facts(labeled: head_lib.LabeledViews, unlabeled: Optional[np.ndarray],
                 eval_features: Optional[np.ndarray], source: str,
                 start: float) -> Dict[str, Any]:
  facts = {'labeled_images': len(labeled.labels), 'views': labeled.features.shape[0],
           'unlabeled_images': 0 if unlabeled is None else len(unlabeled),
           'eval_images': 0 if eval_features is None else len(eval_features),
           'source': source, 'seconds': time.perf_counter() - start}
  logging.info('Feature cache (%s) ready in %.1f s.', source, facts['seconds'])
  return facts


def _compute_cache(embedder: feature_cache.Embedder, views: List[feature_cache.View],
                   train, unlabeled, evaluation, totals) -> _FeatureCache:
  """The backbone over the datasets here, in this process. `evaluation` (the
  eval split with names, or None) is for the audit only; `totals` holds each
  split's number of images, for the progress lines."""
  start = time.perf_counter()
  train_columns: List[List[np.ndarray]] = [[], [], []]
  labeled = head_lib.LabeledViews(
      embedder.compute_views(_images(train, train_columns), views, 'labeled images',
                             totals['train']),
      np.concatenate(train_columns[0]))
  unlabeled_features = None
  if unlabeled is not None:
    unlabeled_features = embedder.compute_views(
        _images(unlabeled, []), [None], 'unlabeled images', totals['unlabeled'])[0]
  eval_columns: List[List[np.ndarray]] = [[], [], []]
  eval_features = eval_labels = eval_names = None
  if evaluation is not None:
    eval_features = embedder.compute_views(
        _images(evaluation, eval_columns), [None], 'eval images (audit)',
        totals['eval'])[0]
    eval_labels = np.concatenate(eval_columns[0])
    eval_names = dict(zip(_NAME_KEYS, map(np.concatenate, eval_columns[1:])))
  return _FeatureCache(
      labeled, dict(zip(_NAME_KEYS, map(np.concatenate, train_columns[1:]))),
      unlabeled_features, eval_features, eval_labels, eval_names,
      _cache_facts(labeled, unlabeled_features, eval_features, 'trainer', start))


def _read_cache(fn_args: tfx.components.FnArgs, views: int, dim: int,
                settings: ModelSettings) -> _FeatureCache:
  """BackboneFeatures' records (training.beam_features): the Trainer's
  examples are that step's output, the same splits with features for pixels."""
  start = time.perf_counter()

  def read(file_patterns: List[str], split_views: int) -> Dict[str, np.ndarray]:
    """A split's records in image-id order: the runner's sharding decides the
    order Beam wrote them in, and the head's folds depend on the order."""
    files = [name for pattern in file_patterns for name in tf.io.gfile.glob(pattern)]
    records = feature_cache.read_records(files, split_views, dim)
    order = np.argsort(records[IMAGE_ID_FEATURE], kind='stable')
    return {key: values[:, order] if key == 'features' else values[order]
            for key, values in records.items()}

  train = read(fn_args.train_files[:1], views)
  labeled = head_lib.LabeledViews(train['features'], train['labels'])
  unlabeled = None
  if fn_args.train_files[1:]:
    unlabeled = read(fn_args.train_files[1:], 1)['features'][0]
  evaluation = read(fn_args.eval_files, 1) if settings.data_quality.enabled else None
  return _FeatureCache(
      labeled, {key: train[key] for key in _NAME_KEYS}, unlabeled,
      None if evaluation is None else evaluation['features'][0],
      None if evaluation is None else evaluation['labels'],
      None if evaluation is None else {key: evaluation[key] for key in _NAME_KEYS},
      _cache_facts(labeled, unlabeled,
                   None if evaluation is None else evaluation['features'][0],
                   'BackboneFeatures', start))


@dataclasses.dataclass
class _PhaseOne:
  """What phase 1 learned on the feature cache, for the history and the export."""
  history: Dict[str, Any]
  cache: Dict[str, Any]
  audit: Optional[Dict[str, Any]]
  train_labels: np.ndarray
  detector: Optional[ood.Detector]
  ood: Dict[str, Any]


def _fit_detector(head_model, clean_features, labels, settings: ModelSettings):
  """ood.fit on the head's normalised features of the labeled train images."""
  if not settings.ood.enabled:
    return None, {'enabled': False, 'reason': 'ood.enabled is off'}
  return ood.fit(head_lib.normalized(head_model, clean_features), labels, settings.ood,
                 settings.training.seed)


def _fit_head_on_cache(model, cache: _FeatureCache, settings: ModelSettings, class_names,
                       model_run_dir) -> _PhaseOne:
  """Phase 1 on the feature cache: the head, the data-quality audit and the
  unknown-image detector on the same features."""
  labeled = cache.labeled
  head_model = classifier.head(model)
  history, out_of_fold = head_lib.fit_head(head_model, labeled, settings,
                                           cache.unlabeled, model_run_dir)
  audit = None
  audit_dir = os.path.join(model_run_dir, DATA_QUALITY_DIR)
  if cache.eval_features is not None:
    if out_of_fold is None:
      audit = {'skipped': 'a class has a single labeled train image: nothing '
                          'could be held out to judge the labels'}
      data_quality.write_summary(audit_dir, audit)
    else:
      names = {key: _names([cache.train_names[key], cache.eval_names[key]])
               for key in _NAME_KEYS}
      images = data_quality.LabeledImages(
          features=head_lib.normalized(
              head_model, np.concatenate([labeled.features[0], cache.eval_features])),
          labels=np.concatenate([labeled.labels, cache.eval_labels]),
          probabilities=np.concatenate(
              [out_of_fold, head_model(tf.constant(cache.eval_features)).numpy()]),
          splits=['train'] * len(labeled.labels) + ['eval'] * len(cache.eval_labels),
          source_paths=names[SOURCE_PATH_FEATURE], image_ids=names[IMAGE_ID_FEATURE])
      audit = data_quality.audit(images, class_names, settings.data_quality, audit_dir)
    logging.info('Data-quality audit: %s', json.dumps(audit))
  detector, ood_facts = _fit_detector(head_model, labeled.features[0], labeled.labels,
                                      settings)
  return _PhaseOne(history, cache.facts, audit, labeled.labels, detector, ood_facts)


class _EpochTimer(tf_keras.callbacks.Callback):
  """Adds each fine-tuning epoch's wall time to the history as `seconds`."""

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    logs['seconds'] = time.perf_counter() - self._start


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """TFX Trainer entry point."""
  settings = ModelSettings.from_custom_config(fn_args.custom_config)
  training = settings.training
  tf_keras.utils.set_random_seed(training.seed)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  class_names = artifact_readers.class_names(fn_args.transform_output)
  num_classes = len(class_names)

  labeled_files, unlabeled_files = fn_args.train_files[:1], fn_args.train_files[1:]
  # Loaded once: the input pipelines and the exported signatures share it.
  transform = tf_transform_output.transform_features_layer()

  start = time.perf_counter()
  model = classifier.build_classifier(settings, num_classes,
                                      preprocessing.TRANSFORMED_IMAGE_KEY)
  logging.info('Classifier built in %.1f s.', time.perf_counter() - start)
  embedder = feature_cache.Embedder(classifier.feature_extractor(model))
  views = feature_cache.labeled_views(
      settings, model.get_layer(classifier.AUGMENTATION_LAYER))
  if training.beam_features:
    cache = _read_cache(fn_args, len(views),
                        model.get_layer(classifier.POOLED_FEATURES_LAYER).output.shape[-1],
                        settings)
  else:
    # The feature cache sees every image once, in file order: the head's fits
    # do not depend on it, and a shuffle buffer would hold up to 10,000 encoded
    # images (~0.8 GB of photos). Fine-tuning shuffles.
    def unshuffled(files, with_names=False):
      return _dataset(fn_args, files, tf_transform_output, transform,
                      training.batch_size, shuffle=False, seed=0, with_names=with_names)
    cache = _compute_cache(
        embedder, views, unshuffled(labeled_files, with_names=True),
        unshuffled(unlabeled_files) if unlabeled_files else None,
        unshuffled(fn_args.eval_files, with_names=True)
        if settings.data_quality.enabled else None,
        {'train': _count(labeled_files),
         'unlabeled': _count(unlabeled_files) if unlabeled_files else 0,
         'eval': _count(fn_args.eval_files) if settings.data_quality.enabled else 0})
  phase_one = _fit_head_on_cache(model, cache, settings, class_names, fn_args.model_run_dir)
  history: Dict[str, Any] = {'head': phase_one.history,
                             'feature_cache': phase_one.cache,
                             'data_quality': phase_one.audit,
                             'ood': phase_one.ood}
  train_labels, detector = phase_one.train_labels, phase_one.detector
  train_counts = np.bincount(train_labels, minlength=num_classes)
  logging.info('Train images per class: %s', dict(zip(class_names, train_counts.tolist())))
  history['train_images'] = int(train_counts.sum())

  if training.fine_tune_epochs:
    unfrozen = classifier.unfreeze_top(model, training.fine_tune_layers)
    logging.info('Fine-tuning %d backbone layers at learning rate %g for %d epochs.',
                 unfrozen, training.fine_tune_learning_rate, training.fine_tune_epochs)
    classifier.compile_classifier(model, training.fine_tune_learning_rate)
    steps = training.max_steps_per_epoch
    class_weight = (dict(enumerate(head_lib.class_weights(train_labels, num_classes).tolist()))
                    if training.class_weights else None)
    train = _dataset(fn_args, labeled_files, tf_transform_output, transform,
                     training.batch_size, shuffle=True, seed=training.seed)
    history['fine_tune'] = model.fit(
        train.repeat() if steps else train, epochs=training.fine_tune_epochs,
        steps_per_epoch=steps or None, class_weight=class_weight,
        callbacks=[_EpochTimer(),
                   tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
        verbose=2).history
    history['head']['calibration']['note'] = (
        'fitted before fine-tuning changed the backbone; not refitted after it')
    if detector is not None:
      # The backbone moved: the reference features are taken anew.
      clean = embedder.compute_views(
          _images(_dataset(fn_args, labeled_files, tf_transform_output, transform,
                           training.batch_size, shuffle=False, seed=0), [[]]),
          [None], 'labeled images (unknown-image reference)',
          phase_one.cache['labeled_images'])[0]
      detector, history['ood'] = _fit_detector(classifier.head(model), clean,
                                               train_labels, settings)

  start = time.perf_counter()
  model.tft_layer = transform
  normalize = get_backbone(settings.model.backbone).normalize
  signatures.export(model, fn_args.serving_model_dir, tf_transform_output,
                    class_names, normalize,
                    ood.UnknownScore(detector) if detector is not None else None)
  logging.info('SavedModel exported in %.1f s.', time.perf_counter() - start)
  extra_dir = os.path.join(fn_args.serving_model_dir, SAVED_MODEL_EXTRAS_DIR)
  tf.io.gfile.makedirs(extra_dir)
  with tf.io.gfile.GFile(os.path.join(extra_dir, TRAINING_HISTORY_FILE), 'w') as f:
    json.dump(history, f, indent=1, default=float)
