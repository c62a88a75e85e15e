"""How far the Trainer's confidence and its "unknown" can be trusted.

For each data set (--datasets) and labels per class (--ks, seeds --seeds):
the head is fitted exactly as in the Trainer (head.fit_head on the
pipeline's preprocessing and frozen backbone, clean and mirrored views, no
unlabeled split) on k labeled pool images per class, then:

- calibration: expected calibration error of the head's top probability on
  the data set's own test images (never trained on), before temperature
  scaling (T = 1) and after (the T fitted on out-of-fold train predictions);
- unknown images: ood.fit on the same labeled images (threshold at
  ood.false_rejection_rate of held-out scores), then the share of the test
  images called unknown (the false rejections) and of each foreign set:
  the *other* data set's test images (Animal-MNIST for a Fashion-MNIST
  model and back), crops of scikit-image's bundled photos, and its
  bundled faces (lfw_subset). AUROC of the score against the test images,
  side by side with two scores that need no stored features: the maximum
  softmax probability and the energy (-logsumexp of the logits).

    python bench/trust.py                      # make bench-trust
    python bench/trust.py --ks 20 --seeds 0 --no-write

Writes docs/trust_results.md and bench/results/trust.json.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import json
import logging
import time
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
from PIL import Image
from scipy import special
from skimage import data as skimage_data
from sklearn import metrics

from bench import datasets
from bench import label_efficiency
from bench import measure
from models import classifier
from models import ood
from models.trainer import calibration
from models.trainer import feature_cache
from models.trainer import head as head_lib

RESULTS_JSON = os.path.join(REPO_ROOT, 'bench', 'results', 'trust.json')
TABLE_MD = os.path.join(REPO_ROOT, 'docs', 'trust_results.md')
# scikit-image's photos that ship with the package (no download), cropped.
PHOTOS = ('astronaut', 'brick', 'camera', 'cat', 'coffee', 'coins', 'grass', 'gravel',
          'horse', 'moon', 'page', 'rocket', 'text', 'colorwheel', 'logo',
          'immunohistochemistry', 'retina', 'hubble_deep_field', 'clock', 'chelsea')
CROPS_PER_PHOTO = 8
OTHER = {'fashion_mnist': 'animal_mnist', 'animal_mnist': 'fashion_mnist'}


def photo_crops(seed: int) -> np.ndarray:
  """Random square crops (40-100 % of the short side) of the bundled photos, 96 px."""
  rng = np.random.default_rng(seed)
  crops = []
  for name in PHOTOS:
    image = np.asarray(getattr(skimage_data, name)())
    if image.dtype == bool:
      image = image.astype(np.uint8) * 255
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    height, width = image.shape[:2]
    for _ in range(CROPS_PER_PHOTO):
      side = int(min(height, width) * rng.uniform(0.4, 1.0))
      top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
      crops.append(np.asarray(Image.fromarray(
          image[top:top + side, left:left + side].astype(np.uint8)).resize((96, 96))))
  return np.stack(crops)


def faces() -> np.ndarray:
  return (skimage_data.lfw_subset() * 255).astype(np.uint8)


def _auroc(known: np.ndarray, foreign: np.ndarray) -> float:
  return float(metrics.roc_auc_score(
      np.r_[np.zeros(len(known)), np.ones(len(foreign))], np.r_[known, foreign]))


def run_condition(pool, labels, test, test_labels, foreign, config, k, seed):
  """One head and detector on k labeled images per class; the measures above."""
  rng = np.random.default_rng(seed)
  labeled = np.sort(np.concatenate([
      rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]))
  num_classes = int(labels.max()) + 1
  head_model = classifier.standalone_head(pool.shape[-1], num_classes)
  history, _ = head_lib.fit_head(
      head_model, head_lib.LabeledViews(pool[:, labeled], labels[labeled]), config)
  fitted = history['calibration']
  probabilities = head_model(tf.constant(test)).numpy()
  before = calibration.rescale(probabilities, 1.0 / fitted['temperature'])
  normalize = lambda x: head_lib.normalized(head_model, x)   # pylint: disable=unnecessary-lambda-assignment
  detector, facts = ood.fit(normalize(pool[0, labeled]), labels[labeled], config.ood,
                            seed)
  score = lambda x: ood.scores(normalize(x), detector.reference, detector.neighbours)  # pylint: disable=unnecessary-lambda-assignment
  kernel, bias = head_model.get_layer(classifier.PROBABILITIES_LAYER).get_weights()
  alternatives = {
      'max_softmax': lambda x: 1.0 - head_model(tf.constant(x)).numpy().max(-1),
      'energy': lambda x: -special.logsumexp(normalize(x) @ kernel + bias, axis=-1),
  }
  known = score(test)
  row = {
      'k': k, 'seed': seed, 'labeled': int(len(labeled)),
      'test_accuracy': float(np.mean(probabilities.argmax(-1) == test_labels)),
      'temperature': fitted['temperature'],
      'ece_before': calibration.expected_calibration_error(before, test_labels),
      'ece_after': calibration.expected_calibration_error(probabilities, test_labels),
      'threshold': facts['threshold'],
      'test_rejected': float(np.mean(known > detector.threshold)),
      'foreign': {},
  }
  for name, features in foreign.items():
    scores = score(features)
    row['foreign'][name] = {
        'images': int(len(features)),
        'rejected': float(np.mean(scores > detector.threshold)),
        'auroc': _auroc(known, scores),
        **{f'auroc_{alt}': _auroc(fn(test), fn(features))
           for alt, fn in alternatives.items()}}
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--datasets', nargs='+', default=['fashion_mnist', 'animal_mnist'])
  parser.add_argument('--ks', nargs='+', type=int, default=[10, 30, 100])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--pool-per-class', type=int, default=100)
  parser.add_argument('--test-per-class', type=int, default=100)
  measure.add_report_arguments(parser)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', force=True)
  tf.get_logger().setLevel('ERROR')
  started = time.perf_counter()
  loaded = {name: datasets.load(name, args.pool_per_class, args.test_per_class)
            for name in args.datasets}
  config = label_efficiency.pipeline_config(loaded[args.datasets[0]].class_names,
                                            args.overrides)
  # The frozen backbone's features do not depend on the data set: one embedder.
  model = label_efficiency.build_classifier(config, 2)
  embedder = feature_cache.Embedder(classifier.feature_extractor(model))
  views = feature_cache.labeled_views(config, model.get_layer(classifier.AUGMENTATION_LAYER))

  def embed(images, image_views, what):
    return embedder.compute_views(label_efficiency.model_inputs(images, config),
                                  image_views, what, len(images))

  features = {'photos': embed(photo_crops(0), [None], 'photo crops')[0],
              'faces': embed(faces(), [None], 'faces')[0]}
  pools = {}
  for name, dataset in loaded.items():
    pools[name] = embed(dataset.pool_images, views, f'{name} pool')
    features[name] = embed(dataset.test_images, [None], f'{name} test')[0]
  rows = []
  for name, dataset in loaded.items():
    foreign = {other: features[other] for other in ([OTHER[name]] if OTHER.get(name) in
                                                    loaded else []) + ['photos', 'faces']}
    for k in args.ks:
      for seed in args.seeds:
        row = {'dataset': name, **run_condition(
            pools[name], dataset.pool_labels, features[name], dataset.test_labels,
            foreign, config, min(k, args.pool_per_class), seed)}
        logging.info('%s', json.dumps(row))
        rows.append(row)
  report = {'rows': rows, 'seconds': time.perf_counter() - started, 'args': vars(args),
            'ood': dataclasses.asdict(config.ood)}
  print(markdown(report))
  if not args.no_write:
    measure.publish(report, RESULTS_JSON, TABLE_MD, markdown(report))


def _mean(rows: List[Dict[str, Any]], get) -> str:
  values = [get(row) for row in rows]
  return f'{np.mean(values):.3f}' + (f' ± {np.std(values):.3f}' if len(values) > 1 else '')


def markdown(report: Dict[str, Any]) -> str:
  """Means (± std over seeds) per data set and k, as docs/trust.md links to."""
  rows = report['rows']
  groups: Dict[tuple, List[Dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault((row['dataset'], row['k']), []).append(row)
  lines = [
      '# Calibration and unknown images: measured (`make bench-trust`)', '',
      f"Written by bench/trust.py ({report['seconds']:.0f} s); arguments: "
      f"`{json.dumps(report['args'])}`; detector settings `{json.dumps(report['ood'])}`.",
      '', '## Calibration on the test images', '',
      '| data set | labels/class | test accuracy | temperature | ECE before | ECE after |',
      '|---|---:|---:|---:|---:|---:|']
  for (name, k), group in groups.items():
    lines.append(f"| {name} | {k} | {_mean(group, lambda r: r['test_accuracy'])} | "
                 f"{_mean(group, lambda r: r['temperature'])} | "
                 f"{_mean(group, lambda r: r['ece_before'])} | "
                 f"{_mean(group, lambda r: r['ece_after'])} |")
  lines += ['', '## Unknown images', '',
            'Rejected: share called unknown at the calibrated threshold (on the test '
            'images of the model\'s own classes: false rejections, target '
            f"{report['ood']['false_rejection_rate']:.0%}). AUROC: the k-NN score "
            '(exported), then the maximum softmax probability and the energy score '
            'for comparison.', '',
            '| data set | labels/class | test rejected | foreign set | rejected | '
            'AUROC k-NN | AUROC max softmax | AUROC energy |',
            '|---|---:|---:|---|---:|---:|---:|---:|']
  for (name, k), group in groups.items():
    for foreign in group[0]['foreign']:
      get = lambda key: (lambda r: r['foreign'][foreign][key])  # pylint: disable=cell-var-from-loop
      lines.append(
          f"| {name} | {k} | {_mean(group, lambda r: r['test_rejected'])} | {foreign} | "
          f"{_mean(group, get('rejected'))} | {_mean(group, get('auroc'))} | "
          f"{_mean(group, get('auroc_max_softmax'))} | {_mean(group, get('auroc_energy'))} |")
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  main()
