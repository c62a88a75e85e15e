"""Accuracy per label: the pipeline's training against strong baselines.

For each data set, k labeled images per class (k in --ks) and seed (--seeds),
trains and scores on a fixed held-out test set (never used for training or
model selection) four methods, side by side in one run:

  (a) seed recipe: augmentation -> frozen backbone -> global average pooling ->
      Dense 256 -> softmax, Adam, 10 epochs, the backbone run every epoch
      (and, as (a) cached, the same recipe on the feature cache);
  (b) linear probe: logistic regression on the clean frozen features;
  (c) the pipeline's default training (components/trainer/head.py on the
      feature cache, with the default config, all k labels, no early stopping
      since there is no validation split here);
  (d) (c) plus the rest of the pool as unlabeled images (FixMatch-style).

Every method sees the same images through the same preprocessing as the
pipeline (PNG bytes -> image_codec.decode_and_resize -> backbone.normalize) and
the same frozen backbone. Features of the pool (clean, weak and strong views)
and of the test set are computed once per data set with the Trainer's own
feature_cache.compute_views and kept under --cache-dir.

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
import hashlib
import io
import json
import logging
import time
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from PIL import Image

from bench import datasets
from components import image_codec
from components.backbones import get_backbone
from components.trainer import feature_cache
from components.trainer import head as head_lib
from components.trainer import model as classifier
from pipeline import config as config_lib
from pipeline import dag

METHODS = ('seed_recipe', 'seed_recipe_cached', 'linear_probe', 'pipeline',
           'pipeline_unlabeled')
LABELS = {
    'seed_recipe': '(a) seed recipe',
    'seed_recipe_cached': '(a) seed recipe on the feature cache',
    'linear_probe': '(b) linear probe',
    'pipeline': '(c) pipeline default',
    'pipeline_unlabeled': '(d) pipeline + unlabeled pool',
}
# The seed recipe; on the cache it draws each epoch among the clean
# view and `cached_views` augmented ones.
SEED_RECIPE = {'hidden_units': 256, 'epochs': 10, 'learning_rate': 1e-3, 'batch_size': 32,
               'cached_views': 4}
RESULTS_JSON = os.path.join(REPO_ROOT, 'bench', 'results', 'label_efficiency.json')
TABLE_MD = os.path.join(REPO_ROOT, 'docs', 'label_efficiency_results.md')
PLOT_PNG = os.path.join(REPO_ROOT, 'docs', 'label_efficiency.png')


def encode_png(images: np.ndarray) -> List[bytes]:
  """uint8 [N, H, W(, 3)] -> PNG bytes, what ExampleGen would ingest."""
  encoded = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='PNG')
    encoded.append(buffer.getvalue())
  return encoded


def model_inputs(images: np.ndarray, config: Dict[str, Any],
                 batch_size: int = 64) -> Iterator[tf.Tensor]:
  """Batches of model inputs, preprocessed exactly as the Transform graph does."""
  normalize = get_backbone(config['model']['backbone']).normalize
  size = config['image_size']
  preprocess = tf.function(
      lambda encoded: normalize(image_codec.decode_and_resize(encoded, size)))
  encoded = encode_png(images)
  for begin in range(0, len(encoded), batch_size):
    yield preprocess(tf.constant(encoded[begin:begin + batch_size]))


def pipeline_config(class_names: Tuple[str, ...], overrides: List[str]) -> Dict[str, Any]:
  """The Trainer's custom_config for the default pipeline config."""
  config = dag.components_config(config_lib.load_config(None, overrides))
  config['class_names'] = list(class_names)
  return config


def build_classifier(config: Dict[str, Any], num_classes: int) -> tf_keras.Model:
  return classifier.build_classifier(config, num_classes, 'image')


def pool_views(config: Dict[str, Any]) -> Dict[str, int]:
  """How many views of each kind the pool's cache holds."""
  return {'clean': 1,
          'weak': max(config['training']['cached_views'], SEED_RECIPE['cached_views']),
          'strong': config['semi_supervised']['strong_views']}


def features(dataset: datasets.ImageDataset, config: Dict[str, Any],
             cache_dir: str) -> Dict[str, np.ndarray]:
  """Pool views [clean + weak + strong, N, D] and clean test features [N, D],
  from the cache folder when the same images and settings were embedded before."""
  counts = pool_views(config)
  key = hashlib.sha256(json.dumps(
      [dataset.name, dataset.pool_labels.tolist(), dataset.test_labels.tolist(),
       config['image_size'], config['model'], config['augmentation'],
       config['semi_supervised'], counts, config['training']['seed']]).encode()
  ).hexdigest()[:12]
  path = os.path.join(cache_dir, f'{dataset.name}-{key}.npz')
  if os.path.exists(path):
    with np.load(path) as cached:
      return dict(cached)
  model = build_classifier(config, len(dataset.class_names))
  extractor = classifier.feature_extractor(model)
  weak = model.get_layer(classifier.AUGMENTATION_LAYER)
  strong = classifier.strong_augmentation(config)
  start = time.perf_counter()
  views = feature_cache.compute_views(
      extractor, model_inputs(dataset.pool_images, config),
      [None] + [weak] * counts['weak'] + [strong] * counts['strong'], 'pool images')
  pool_seconds = time.perf_counter() - start
  test = feature_cache.compute_views(
      extractor, model_inputs(dataset.test_images, config), [None], 'test images')[0]
  result = {'pool': views, 'test': test,
            'seconds_per_view': np.array(pool_seconds / views.shape[0] / views.shape[1])}
  os.makedirs(cache_dir, exist_ok=True)
  np.savez(path, **result)
  return result


def seed_recipe_model(config: Dict[str, Any], num_classes: int, seed: int,
                      cached: bool) -> Tuple[tf_keras.Model, tf_keras.Model]:
  """(a): Dense 256 head; on images through the frozen backbone, or on
  features. Returns (model to train, its head on pooled features)."""
  spec = get_backbone(config['model']['backbone'])
  tf_keras.utils.set_random_seed(seed)
  head = tf_keras.Sequential([
      tf_keras.layers.Dense(SEED_RECIPE['hidden_units'], activation='relu'),
      tf_keras.layers.Dense(num_classes, activation='softmax')])
  if cached:
    model = head
  else:
    size = config['image_size']
    backbone = spec.build(size, config['model']['weights'])
    backbone.trainable = False
    inputs = tf_keras.Input([size, size, 3])
    x = classifier.augmentation_layers(config['augmentation'], seed)(inputs)
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


def run_linear_probe(dataset, cache, labeled, seed) -> Dict[str, Any]:
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  probe = LogisticRegression(max_iter=2000, random_state=seed)
  probe.fit(cache['pool'][0, labeled], dataset.pool_labels[labeled])
  seconds = time.perf_counter() - start
  accuracy = float(np.mean(probe.predict(cache['test']) == dataset.test_labels))
  return {'accuracy': accuracy, 'train_seconds': seconds}


def run_pipeline(dataset, cache, config, labeled, unlabeled, seed) -> Dict[str, Any]:
  """(c) / (d): the Trainer's head training on the cache, default config."""
  config = {**config, 'training': {**config['training'], 'seed': seed}}
  tf_keras.utils.set_random_seed(seed)
  model = build_classifier(config, len(dataset.class_names))
  head = classifier.head(model)
  counts = pool_views(config)
  labeled_views = cache['pool'][:1 + config['training']['cached_views'], labeled]
  unlabeled_views = None
  if unlabeled is not None:
    strong_start = 1 + counts['weak']
    strong = cache['pool'][strong_start:strong_start + counts['strong'], unlabeled]
    unlabeled_views = head_lib.UnlabeledViews(cache['pool'][:1, unlabeled], strong)
  start = time.perf_counter()
  history = head_lib.train_head(
      head, head_lib.LabeledViews(labeled_views, dataset.pool_labels[labeled]), config,
      unlabeled_views)
  seconds = time.perf_counter() - start
  probabilities = head.predict(cache['test'], batch_size=256, verbose=0)
  result = {'accuracy': float(np.mean(probabilities.argmax(-1) == dataset.test_labels)),
            'train_seconds': seconds,
            'epoch_seconds': float(np.median(history['train_seconds']))}
  if unlabeled is not None:
    result['pseudo_label_rate'] = history['pseudo_label_rate'][-1]
  return result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--datasets', nargs='+', default=list(datasets.NAMES))
  parser.add_argument('--ks', nargs='+', type=int, default=[5, 10, 25, 50])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
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
  for name in args.datasets:
    dataset = datasets.load(name, args.pool_per_class, args.test_per_class)
    config = pipeline_config(dataset.class_names, args.overrides)
    cache = features(dataset, config, args.cache_dir)
    per_class = np.bincount(dataset.pool_labels).min()
    for k in args.ks:
      if k >= per_class:
        logging.info('%s: k=%d skipped, the pool has %d images per class.', name, k,
                     per_class)
        continue
      for seed in args.seeds:
        labeled, unlabeled = datasets.labeled_subset(dataset, k, seed)
        for method in args.methods:
          if method.startswith('seed_recipe'):
            result = run_seed_recipe(dataset, cache, config, labeled, seed,
                                     cached=method.endswith('cached'))
          elif method == 'linear_probe':
            result = run_linear_probe(dataset, cache, labeled, seed)
          else:
            result = run_pipeline(dataset, cache, config, labeled,
                                  unlabeled if method == 'pipeline_unlabeled' else None,
                                  seed)
          row = {'dataset': name, 'k': k, 'seed': seed, 'method': method,
                 'labeled': len(labeled),
                 'unlabeled': len(unlabeled) if method == 'pipeline_unlabeled' else 0,
                 'test_images': len(dataset.test_labels),
                 'feature_seconds_per_view': float(cache['seconds_per_view']), **result}
          logging.info('%s', json.dumps(row))
          rows.append(row)
  report = {'rows': rows, 'seconds': time.perf_counter() - started,
            'args': vars(args), 'seed_recipe': SEED_RECIPE}
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
    summary[f'{name}/k={k}/{method}'] = {
        'accuracy_mean': float(accuracy.mean()), 'accuracy_std': float(accuracy.std()),
        'train_seconds_mean': float(np.mean([row['train_seconds'] for row in group])),
        'epoch_seconds_mean': (float(np.mean([row['epoch_seconds'] for row in group]))
                               if 'epoch_seconds' in group[0] else None),
        'seeds': len(group)}
  return summary


def write_outputs(report: Dict[str, Any]) -> None:
  from bench import label_efficiency_report  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(RESULTS_JSON), exist_ok=True)
  with open(RESULTS_JSON, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1)
  summary = summarize(report['rows'])
  with open(TABLE_MD, 'w', encoding='utf-8') as f:
    f.write(label_efficiency_report.table(report, summary, LABELS))
  label_efficiency_report.plot(summary, LABELS, PLOT_PNG)
  logging.info('Wrote %s, %s and %s', RESULTS_JSON, TABLE_MD, PLOT_PNG)


if __name__ == '__main__':
  main()
