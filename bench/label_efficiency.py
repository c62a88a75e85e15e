"""Accuracy per label: the pipeline's training against strong baselines.

For each data set, k labeled images per class (k in --ks) and seed (--seeds),
trains and scores on a fixed held-out test set (never used for training or
model selection) these methods, side by side in one run:

  (b)  linear probe: logistic regression (C = 1) on the clean Lite0 features;
  (b+) strong probe: logistic regression on L2-normalised clean Lite0 features,
       C chosen by 3-fold cross-validation on the k labels from {0.1, 1, 10};
  (c)  the pipeline's default training (models/trainer/head.py on the
       feature cache, default config, all k labels), per backbone in
       --backbones and on their features combined;
  (d)  (c) plus the rest of the pool as unlabeled images;
  (c') (c) with its regularisation chosen on the gate's eval split instead of
       by cross-validation: model selection leaking into the gate, as early
       stopping on the eval split did;
  (a)  the seed recipe (Dense 256 + Adam, 10 epochs), on request (--methods).

For each (k, seed) an eval split of max(2, k/4) images per class (what a 20 %
eval fraction leaves beside k train images) is drawn from the pool apart from
the labeled and unlabeled images: the gate's accuracy on it, against test
accuracy, shows whether the gate is optimistic.

Every method sees the same images through the same preprocessing as the
pipeline (PNG bytes -> image_codec.decode_and_resize -> backbone.normalize) and
the same frozen backbone. Features of the pool (clean and mirrored views, and
augmented ones for (a)) and of the test set are computed once per data set
and backbone with the Trainer's own feature_cache.compute_views and kept
under --cache-dir.

    python bench/label_efficiency.py            # everything (make bench-labels)
    python bench/label_efficiency.py --datasets sample --ks 5 --seeds 0

Writes docs/label_efficiency_results.md (table), docs/label_efficiency.png
(accuracy vs labels per class) and bench/results/label_efficiency.json.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import hashlib
import io
import json
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from PIL import Image
from sklearn import linear_model
from sklearn import model_selection

from bench import datasets
from models import backbones
from models import classifier
from models import image_codec
from models.backbones import get_backbone
from models.settings import ModelSettings
from models.trainer import feature_cache
from models.trainer import head as head_lib
from pipeline import config as config_lib
from pipeline import dag

BASELINES = ('linear_probe', 'linear_probe_plus')
METHODS = (*BASELINES, 'pipeline', 'pipeline_unlabeled', 'pipeline_eval_selected',
           'seed_recipe', 'seed_recipe_cached')
DEFAULT_METHODS = METHODS[:5]
# Run per backbone in --backbones (and on their features combined); the rest
# on the first backbone only.
PER_BACKBONE = ('pipeline',)
BACKBONES = (backbones.DEFAULT_BACKBONE, 'efficientnet_lite1', 'efficientnet_lite2')
COMBINED = 'combined'
LABELS = {
    'seed_recipe': '(a) seed recipe',
    'seed_recipe_cached': '(a) seed recipe on the feature cache',
    'linear_probe': '(b) linear probe',
    'linear_probe_plus': '(b+) L2 probe, C by cross-validation',
    'pipeline': '(c) pipeline default',
    'pipeline_unlabeled': '(d) pipeline + unlabeled pool',
    'pipeline_eval_selected': "(c') C chosen on the eval split",
}
# The seed recipe; on the cache it draws each epoch among the clean
# view and `cached_views` augmented ones.
SEED_RECIPE = {'hidden_units': 256, 'epochs': 10, 'learning_rate': 1e-3, 'batch_size': 32,
               'cached_views': 4}
RESULTS_JSON = os.path.join(REPO_ROOT, 'bench', 'results', 'label_efficiency.json')
TABLE_MD = os.path.join(REPO_ROOT, 'docs', 'label_efficiency_results.md')
PLOT_PNG = os.path.join(REPO_ROOT, 'docs', 'label_efficiency.png')


def method_key(method: str, backbone: str, primary: str) -> str:
  """Row key: the method, tagged with its backbone when not the first one."""
  return method if backbone == primary else f'{method}@{backbone}'


def label(key: str) -> str:
  method, _, backbone = key.partition('@')
  return LABELS[method] + (f', {backbone}' if backbone else '')


def encode_png(images: np.ndarray) -> List[bytes]:
  """uint8 [N, H, W(, 3)] -> PNG bytes, what ExampleGen would ingest."""
  encoded = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='PNG')
    encoded.append(buffer.getvalue())
  return encoded


def model_inputs(images: np.ndarray, config: ModelSettings,
                 batch_size: int = 64) -> Iterator[tf.Tensor]:
  """Batches of model inputs, preprocessed exactly as the Transform graph does."""
  return encoded_inputs(encode_png(images), config, batch_size)


def encoded_inputs(encoded: List[bytes], config: ModelSettings,
                   batch_size: int = 64) -> Iterator[tf.Tensor]:
  """Batches of model inputs from encoded images, decoded, resized and
  normalized exactly as the Transform graph does."""
  normalize = get_backbone(config.model.backbone).normalize
  size = config.image_size
  preprocess = tf.function(
      lambda encoded: normalize(image_codec.decode_and_resize(encoded, size)))
  for begin in range(0, len(encoded), batch_size):
    yield preprocess(tf.constant(encoded[begin:begin + batch_size]))


def pipeline_config(class_names: Tuple[str, ...], overrides: List[str]) -> ModelSettings:
  """What the Trainer is told under the default pipeline config."""
  return dataclasses.replace(dag.model_settings(config_lib.load_config(None, overrides)),
                             class_names=tuple(class_names))


def with_seed(config: ModelSettings, seed: int) -> ModelSettings:
  return dataclasses.replace(config, training=dataclasses.replace(config.training, seed=seed))


def build_classifier(config: ModelSettings, num_classes: int) -> tf_keras.Model:
  return classifier.build_classifier(config, num_classes, 'image')


def pool_views(config: ModelSettings, seed_recipe: bool) -> Dict[str, int]:
  """How many views of each kind the pool's cache holds: clean, mirrored and
  (for the seed recipe on the cache, or training.cached_views) augmented."""
  return {'clean': 1, 'mirror': 1,
          'weak': max(config.training.cached_views,
                      SEED_RECIPE['cached_views'] if seed_recipe else 0)}


def features(dataset: datasets.ImageDataset, config: ModelSettings, cache_dir: str,
             seed_recipe: bool) -> Dict[str, np.ndarray]:
  """Pool views [clean + mirror + weak, N, D] and clean test features [N, D],
  from the cache folder when the same images and settings were embedded before."""
  counts = pool_views(config, seed_recipe)
  key = hashlib.sha256(json.dumps(
      [dataset.name, dataset.pool_labels.tolist(), dataset.test_labels.tolist(),
       config.image_size, dataclasses.asdict(config.model), dataclasses.asdict(config.augmentation),
       counts, config.training.seed]).encode()).hexdigest()[:12]
  path = os.path.join(cache_dir, f'{dataset.name}-{key}.npz')
  if os.path.exists(path):
    with np.load(path) as cached:
      return dict(cached)
  model = build_classifier(config, len(dataset.class_names))
  extractor = classifier.feature_extractor(model)
  weak = model.get_layer(classifier.AUGMENTATION_LAYER)
  start = time.perf_counter()
  views = feature_cache.compute_views(
      extractor, model_inputs(dataset.pool_images, config),
      [None, feature_cache.mirror] + [weak] * counts['weak'], 'pool images')
  pool_seconds = time.perf_counter() - start
  test = feature_cache.compute_views(
      extractor, model_inputs(dataset.test_images, config), [None], 'test images')[0]
  result = {'pool': views, 'test': test,
            'seconds_per_view': np.array(pool_seconds / views.shape[0] / views.shape[1])}
  os.makedirs(cache_dir, exist_ok=True)
  np.savez(path, **result)
  return result


def combined(caches: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """Several backbones' clean and mirrored features side by side, each scaled
  to unit mean norm so that no backbone dominates by its feature scale."""
  scales = [np.linalg.norm(cache['pool'][0], axis=-1).mean() for cache in caches]
  return {'pool': np.concatenate([c['pool'][:2] / s for c, s in zip(caches, scales)], -1),
          'test': np.concatenate([c['test'] / s for c, s in zip(caches, scales)], -1),
          'seconds_per_view': np.array(sum(float(c['seconds_per_view']) for c in caches))}


def seed_recipe_model(config: ModelSettings, num_classes: int, seed: int,
                      cached: bool) -> Tuple[tf_keras.Model, tf_keras.Model]:
  """(a): Dense 256 head; on images through the frozen backbone, or on
  features. Returns (model to train, its head on pooled features)."""
  spec = get_backbone(config.model.backbone)
  tf_keras.utils.set_random_seed(seed)
  head = tf_keras.Sequential([
      tf_keras.layers.Dense(SEED_RECIPE['hidden_units'], activation='relu'),
      tf_keras.layers.Dense(num_classes, activation='softmax')])
  if cached:
    model = head
  else:
    size = config.image_size
    backbone = spec.build(size, config.model.weights)
    backbone.trainable = False
    inputs = tf_keras.Input([size, size, 3])
    x = classifier.augmentation_layers(config.augmentation, seed)(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D()(backbone(x, training=False))
    model = tf_keras.Model(inputs, head(x))
  model.compile(tf_keras.optimizers.Adam(SEED_RECIPE['learning_rate']),
                'sparse_categorical_crossentropy', metrics=['accuracy'])
  return model, head


class _EpochSeconds(tf_keras.callbacks.Callback):
  def on_train_begin(self, logs=None):
    self.seconds = []

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self._start)


def run_seed_recipe(dataset, cache, config, labeled, seed, cached) -> Dict[str, Any]:
  num_classes = len(dataset.class_names)
  model, head = seed_recipe_model(config, num_classes, seed, cached)
  labels = dataset.pool_labels[labeled]
  if cached:
    # Each epoch shows every image once, in one cached view (clean or weak).
    views = 1 + SEED_RECIPE['cached_views']
    rng = np.random.default_rng(seed)
    seconds = []
    for _ in range(SEED_RECIPE['epochs']):
      drawn = cache['pool'][rng.integers(0, views, len(labeled)), labeled]
      start = time.perf_counter()
      model.fit(drawn, labels, batch_size=SEED_RECIPE['batch_size'], epochs=1,
                shuffle=True, verbose=0)
      seconds.append(time.perf_counter() - start)
  else:
    images = np.concatenate(list(model_inputs(dataset.pool_images[labeled], config)))
    timer = _EpochSeconds()
    model.fit(images, labels, batch_size=SEED_RECIPE['batch_size'],
              epochs=SEED_RECIPE['epochs'], callbacks=[timer], verbose=0, shuffle=True)
    seconds = timer.seconds
  # At inference the augmentation is the identity, so the trained model's
  # prediction on a test image is its head on the image's clean features.
  probabilities = head.predict(cache['test'], batch_size=256, verbose=0)
  return {'accuracy': float(np.mean(probabilities.argmax(-1) == dataset.test_labels)),
          'train_seconds': float(sum(seconds)),
          'epoch_seconds': float(np.median(seconds))}


def _score(predict: Callable[[np.ndarray], np.ndarray], cache, dataset, evaluation,
           seconds: float) -> Dict[str, Any]:
  """Test accuracy, the gate's eval accuracy (pool images) and training time."""
  return {'accuracy': float(np.mean(predict(cache['test']) == dataset.test_labels)),
          'eval_accuracy': float(np.mean(predict(cache['pool'][0, evaluation]) ==
                                         dataset.pool_labels[evaluation])),
          'train_seconds': seconds}


def run_linear_probe(dataset, cache, labeled, evaluation, seed) -> Dict[str, Any]:
  """(b): logistic regression with scikit-learn's defaults on raw features."""
  start = time.perf_counter()
  probe = linear_model.LogisticRegression(max_iter=2000, random_state=seed)
  probe.fit(cache['pool'][0, labeled], dataset.pool_labels[labeled])
  return _score(probe.predict, cache, dataset, evaluation, time.perf_counter() - start)


def run_linear_probe_plus(dataset, cache, labeled, evaluation, seed) -> Dict[str, Any]:
  """(b+): L2-normalised features, C by 3-fold cross-validation on the labels."""
  def unit(features):
    return features / np.linalg.norm(features, axis=-1, keepdims=True)
  start = time.perf_counter()
  probe = model_selection.GridSearchCV(
      linear_model.LogisticRegression(max_iter=2000, random_state=seed),
      {'C': [0.1, 1.0, 10.0]},
      cv=model_selection.StratifiedKFold(3, shuffle=True, random_state=seed))
  probe.fit(unit(cache['pool'][0, labeled]), dataset.pool_labels[labeled])
  return _score(lambda features: probe.predict(unit(features)), cache, dataset, evaluation,
                time.perf_counter() - start)


def run_pipeline(dataset, cache, config, labeled, evaluation, unlabeled,
                 seed) -> Dict[str, Any]:
  """(c) / (d): the Trainer's head fitting on the cache, default config."""
  config = with_seed(config, seed)
  views = 2 if config.augmentation.horizontal_flip else 1
  head = classifier.standalone_head(cache['pool'].shape[-1], len(dataset.class_names))
  start = time.perf_counter()
  history, _ = head_lib.fit_head(
      head, head_lib.LabeledViews(cache['pool'][:views, labeled], dataset.pool_labels[labeled]),
      config, None if unlabeled is None else cache['pool'][0, unlabeled])
  seconds = time.perf_counter() - start - history['learning_curve_seconds']
  result = _score(lambda features: head.predict(features, batch_size=1024,
                                                verbose=0).argmax(-1),
                  cache, dataset, evaluation, seconds)
  result['regularization'] = history['regularization']['chosen']
  if unlabeled is not None:
    result['unlabeled_used'] = history['unlabeled']['used']
  return result


def run_pipeline_eval_selected(dataset, cache, config, labeled, evaluation,
                               seed) -> Dict[str, Any]:
  """(c'): the head at each C of the grid, keeping the best on the eval split."""
  views = 2 if config.augmentation.horizontal_flip else 1
  head = classifier.standalone_head(cache['pool'].shape[-1], len(dataset.class_names))
  head.get_layer(classifier.NORMALIZATION_LAYER).adapt(cache['pool'][0, labeled])
  training_set = head_lib.TrainingSet(
      head_lib.normalized(head, cache['pool'][:views, labeled]), dataset.pool_labels[labeled],
      None, len(dataset.class_names), with_seed(config, seed))
  start = time.perf_counter()
  eval_features = head_lib.normalized(head, cache['pool'][0, evaluation])
  fits = [training_set.fit(np.arange(len(labeled)), c, False)[0]
          for c in head_lib.REGULARIZATION_GRID]
  eval_labels = dataset.pool_labels[evaluation]
  best = max(fits, key=lambda fit: np.mean(
      fit.probabilities(eval_features).argmax(-1) == eval_labels))
  return _score(lambda features: best.probabilities(
      head_lib.normalized(head, features)).argmax(-1), cache, dataset, evaluation,
                time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--datasets', nargs='+', default=list(datasets.NAMES))
  parser.add_argument('--ks', nargs='+', type=int, default=[5, 10, 25, 50])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--methods', nargs='+', default=list(DEFAULT_METHODS),
                      choices=METHODS)
  parser.add_argument('--backbones', nargs='+', default=list(BACKBONES),
                      help='the first gets every method; (c) runs on each, and '
                      'on their features combined when there are several')
  parser.add_argument('--pool-per-class', type=int, default=300)
  parser.add_argument('--test-per-class', type=int, default=200)
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      help='pipeline config override, section.key=value')
  parser.add_argument('--cache-dir', default=os.path.join(REPO_ROOT, 'outputs', 'bench',
                                                          'feature_cache'))
  parser.add_argument('--no-write', action='store_true',
                      help='print only; leave docs/ and bench/results/ alone')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', force=True)
  tf.get_logger().setLevel('ERROR')

  rows = []
  started = time.perf_counter()
  primary = args.backbones[0]
  seed_recipe = any(method.startswith('seed_recipe') for method in args.methods)
  for name in args.datasets:
    dataset = datasets.load(name, args.pool_per_class, args.test_per_class)
    caches, configs = {}, {}
    for backbone in args.backbones:
      configs[backbone] = pipeline_config(dataset.class_names,
                                          [*args.overrides, f'model.backbone={backbone}'])
      caches[backbone] = features(dataset, configs[backbone], args.cache_dir,
                                  seed_recipe and backbone == primary)
    if len(args.backbones) > 1:
      caches[COMBINED] = combined([caches[backbone] for backbone in args.backbones])
      configs[COMBINED] = configs[primary]
    per_class = np.bincount(dataset.pool_labels).min()
    for k in args.ks:
      eval_per_class = max(2, round(k / 4))
      if k + eval_per_class >= per_class:
        logging.info('%s: k=%d skipped, the pool has %d images per class.', name, k,
                     per_class)
        continue
      for seed in args.seeds:
        labeled, evaluation, unlabeled = datasets.gate_split(dataset, k, seed,
                                                             eval_per_class)
        for backbone, cache in caches.items():
          config = configs[backbone]
          for method in args.methods:
            if backbone != primary and method not in PER_BACKBONE:
              continue
            if method.startswith('seed_recipe'):
              result = run_seed_recipe(dataset, cache, config, labeled, seed,
                                       cached=method.endswith('cached'))
            elif method == 'linear_probe':
              result = run_linear_probe(dataset, cache, labeled, evaluation, seed)
            elif method == 'linear_probe_plus':
              result = run_linear_probe_plus(dataset, cache, labeled, evaluation, seed)
            elif method == 'pipeline_eval_selected':
              result = run_pipeline_eval_selected(dataset, cache, config, labeled,
                                                  evaluation, seed)
            else:
              result = run_pipeline(
                  dataset, cache, config, labeled, evaluation,
                  unlabeled if method == 'pipeline_unlabeled' else None, seed)
            row = {'dataset': name, 'k': k, 'seed': seed,
                   'method': method_key(method, backbone, primary),
                   'labeled': len(labeled), 'eval_images': len(evaluation),
                   'unlabeled': len(unlabeled) if method == 'pipeline_unlabeled' else 0,
                   'test_images': len(dataset.test_labels),
                   'feature_seconds_per_view': float(cache['seconds_per_view']),
                   **result}
            logging.info('%s', json.dumps(row))
            rows.append(row)
  default_backbone = pipeline_config((), args.overrides).model.backbone
  report = {'rows': rows, 'seconds': time.perf_counter() - started,
            'args': vars(args), 'seed_recipe': SEED_RECIPE,
            'default_key': {'pipeline': method_key('pipeline', default_backbone, primary),
                            'pipeline_unlabeled': method_key('pipeline_unlabeled',
                                                             default_backbone, primary)}}
  print(json.dumps(summarize(rows), indent=1))
  if not args.no_write:
    write_outputs(report)


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
  """Mean and std over seeds per (data set, k, method)."""
  grouped: Dict[Tuple[str, int, str], List[Dict[str, Any]]] = {}
  for row in rows:
    grouped.setdefault((row['dataset'], row['k'], row['method']), []).append(row)
  summary = {}
  for (name, k, method), group in sorted(grouped.items()):
    accuracy = np.array([row['accuracy'] for row in group])
    entry = {
        'accuracy_mean': float(accuracy.mean()), 'accuracy_std': float(accuracy.std()),
        'train_seconds_mean': float(np.mean([row['train_seconds'] for row in group])),
        'epoch_seconds_mean': (float(np.mean([row['epoch_seconds'] for row in group]))
                               if 'epoch_seconds' in group[0] else None),
        'seeds': len(group)}
    if 'eval_accuracy' in group[0]:
      entry['eval_gap_mean'] = float(np.mean([row['eval_accuracy'] - row['accuracy']
                                              for row in group]))
    if 'unlabeled_used' in group[0]:
      entry['unlabeled_used'] = sum(row['unlabeled_used'] for row in group)
    summary[f'{name}/k={k}/{method}'] = entry
  return summary


def write_outputs(report: Dict[str, Any]) -> None:
  from bench import label_efficiency_report  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(RESULTS_JSON), exist_ok=True)
  with open(RESULTS_JSON, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1)
  summary = summarize(report['rows'])
  with open(TABLE_MD, 'w', encoding='utf-8') as f:
    f.write(label_efficiency_report.table(report, summary, label))
  label_efficiency_report.plot(summary, label, PLOT_PNG)
  logging.info('Wrote %s, %s and %s', RESULTS_JSON, TABLE_MD, PLOT_PNG)


if __name__ == '__main__':
  main()
