"""How well the Trainer's data-quality audit finds planted label errors and copies.

For each data set (--datasets) and label-noise rate (--noise):

- `--per-class` pool images per class, split 80/20 into train and eval per
  class (seeded), as ImageExampleGen's stratified split would;
- `--copy-fraction` of the images get a copy in the *other* split with the
  same label, altered in one of three ways in turn (ALTERATIONS): re-encoded
  as JPEG (quality 60-90), resized by 0.6-1.6x, or cropped to 90-97 % of
  each side. The content hash cannot see these; the near-duplicate finder
  should, as leakage;
- then `noise` of the original images (train and eval) get another class's
  label, drawn uniformly.

The audit then runs exactly as in the Trainer: the pipeline's preprocessing
and frozen backbone (feature_cache.compute_views, clean and mirrored views),
head.fit_head for the out-of-fold probabilities, data_quality.audit. Reported:

- suspect labels: precision and recall of the list against the flipped images;
- near-duplicates: precision and recall of the flagged pairs against the
  planted copies, under the configured rule and at absolute thresholds alone
  (the calibration of data_quality.near_duplicate_*);
- what fixing is worth: test accuracy (the data set's own test images, clean
  labels, never trained on) of the head fitted on the noisy labels, after a
  reviewer corrects the suspects the list names in the train split, and after
  every flipped train label is corrected (the ceiling).

    python bench/data_quality.py                    # make bench-data-quality
    python bench/data_quality.py --datasets fashion_mnist --noise 0.05 --no-write

Writes docs/data_quality_results.md and bench/results/data_quality.json.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import io
import json
import logging
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
from PIL import Image

from bench import datasets
from bench import label_efficiency
from bench import measure
from components import artifact_readers
from components import contracts
from models import classifier
from models.settings import ModelSettings
from models.trainer import data_quality
from models.trainer import feature_cache
from models.trainer import head as head_lib

THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97)
# The configured rule: the absolute threshold or the mutual-neighbour margin.
DEFAULT_RULE = 'default'

RESULTS_JSON = os.path.join(REPO_ROOT, 'bench', 'results', 'data_quality.json')
TABLE_MD = os.path.join(REPO_ROOT, 'docs', 'data_quality_results.md')


ALTERATIONS = ('recompressed', 'resized', 'cropped')


def altered_copy(image: np.ndarray, alteration: str, rng: np.random.Generator) -> bytes:
  """`image` re-saved as a JPEG, or resized, or slightly cropped (as PNG)."""
  picture = Image.fromarray(image)
  width, height = picture.size
  if alteration == 'resized':
    scale = rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.2, 1.6)])
    picture = picture.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
  elif alteration == 'cropped':
    keep = rng.uniform(0.90, 0.97)
    crop_w, crop_h = round(width * keep), round(height * keep)
    left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    picture = picture.crop((left, top, left + crop_w, top + crop_h))
  buffer = io.BytesIO()
  if alteration == 'recompressed':
    picture.save(buffer, format='JPEG', quality=int(rng.integers(60, 91)))
  else:
    picture.save(buffer, format='PNG')
  return buffer.getvalue()


def embed(encoded: List[bytes], embedder: feature_cache.Embedder, config: ModelSettings,
          views) -> np.ndarray:
  return embedder.compute_views(label_efficiency.encoded_inputs(encoded, config), views)


def corrupted(dataset: datasets.ImageDataset, copy_fraction: float, noise: float,
              seed: int) -> Dict[str, np.ndarray]:
  """The planted problems: split of each pool image, which images get a copy
  (in the other split), and the given labels (`noise` of the originals flipped)."""
  rng = np.random.default_rng(seed)
  labels = dataset.pool_labels
  split = np.zeros(len(labels), bool)               # True: eval
  for class_id in range(len(dataset.class_names)):
    members = rng.permutation(np.flatnonzero(labels == class_id))
    split[members[:round(0.2 * len(members))]] = True
  copied = np.sort(rng.choice(len(labels), round(copy_fraction * len(labels)), replace=False))
  flipped = np.sort(rng.choice(len(labels), round(noise * len(labels)), replace=False))
  given = labels.copy()
  given[flipped] = (labels[flipped] + rng.integers(1, len(dataset.class_names),
                                                   len(flipped))) % len(dataset.class_names)
  return {'eval': split, 'copied': copied, 'flipped': flipped, 'given': given}


def fit(config, features: np.ndarray, labels: np.ndarray, num_classes: int):
  """The Trainer's head on [views, N, D] train features; (head, out-of-fold)."""
  head = classifier.standalone_head(features.shape[-1], num_classes)
  _, out_of_fold = head_lib.fit_head(head, head_lib.LabeledViews(features, labels), config)
  return head, out_of_fold


def accuracy(head, features: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(head.predict(features, batch_size=1024, verbose=0).argmax(-1) == labels))


def precision_recall(found: set, truth: set) -> Dict[str, float]:
  hits = len(found & truth)
  return {'flagged': len(found), 'planted': len(truth), 'found': hits,
          'precision': hits / len(found) if found else None,
          'recall': hits / len(truth) if truth else None}


def run_condition(dataset, config, pool, copies, test, plan) -> Dict[str, Any]:
  """One noise rate on one data set: the audit, scored against the plan."""
  num_classes = len(dataset.class_names)
  is_eval = plan['eval']
  train, evaluation = np.flatnonzero(~is_eval), np.flatnonzero(is_eval)
  copied = plan['copied']
  copy_in_eval = ~is_eval[copied]
  given = plan['given']
  # Image index space: pool images 0..N-1, then the copies.
  n = len(given)
  train_images = np.concatenate([train, n + np.flatnonzero(~copy_in_eval)])
  eval_images = np.concatenate([evaluation, n + np.flatnonzero(copy_in_eval)])
  all_labels = np.concatenate([given, given[copied]])
  all_views = np.concatenate([pool, copies], axis=1)           # [views, N + copies, D]
  true_labels = np.concatenate([dataset.pool_labels, dataset.pool_labels[copied]])

  start = time.perf_counter()
  head, out_of_fold = fit(config, all_views[:, train_images], all_labels[train_images],
                          num_classes)
  noisy_accuracy = accuracy(head, test, dataset.test_labels)
  order = np.concatenate([train_images, eval_images])
  images = data_quality.LabeledImages(
      features=head_lib.normalized(head, all_views[0, order]),
      labels=all_labels[order],
      probabilities=np.concatenate([out_of_fold, head.predict(
          all_views[0, eval_images], batch_size=1024, verbose=0)]),
      splits=['train'] * len(train_images) + ['eval'] * len(eval_images),
      source_paths=[str(i) for i in order], image_ids=[str(i) for i in order])
  settings = dataclasses.replace(config.data_quality, cross_class_duplicates='warn')
  with tempfile.TemporaryDirectory() as folder:
    summary = data_quality.audit(images, dataset.class_names, settings, folder)
    ranked = [int(row['source_path']) for row in artifact_readers.data_quality_list(
        folder, contracts.SUSPECT_LABELS_CSV)]
  suspects = set(ranked)
  audit_seconds = time.perf_counter() - start

  flipped = set(int(i) for i in plan['flipped'])
  flipped |= {n + j for j, original in enumerate(copied) if original in flipped}
  planted = {(int(original), n + j): ALTERATIONS[j % len(ALTERATIONS)]
             for j, original in enumerate(copied)}
  similarities, neighbours = data_quality.nearest_neighbours(images.features)
  by_threshold = {}
  rules = {f'{t:.2f}': (t, None) for t in THRESHOLDS}
  rules[DEFAULT_RULE] = (settings.near_duplicate_similarity,
                         settings.near_duplicate_margin)
  for rule, (threshold, margin) in rules.items():
    pairs = data_quality.near_duplicate_pairs(similarities, neighbours, threshold, margin)
    found = {tuple(sorted((int(order[a]), int(order[b])))) for a, b, _ in pairs}
    by_threshold[rule] = {
        **precision_recall(found, set(planted)),
        'recall_by_alteration': {
            alteration: float(np.mean([pair in found for pair, kind in planted.items()
                                       if kind == alteration]))
            for alteration in ALTERATIONS}}

  # A reviewer corrects what the list names in the train split; the ceiling
  # corrects every flip.
  train_set = set(train_images.tolist())
  fixed = all_labels.copy()
  listed_train = [i for i in suspects if i in train_set]
  fixed[listed_train] = true_labels[listed_train]
  fixed_head, _ = fit(config, all_views[:, train_images], fixed[train_images], num_classes)
  ceiling_head, _ = fit(config, all_views[:, train_images], true_labels[train_images],
                        num_classes)
  return {
      'train_images': len(train_images), 'eval_images': len(eval_images),
      'suspect_labels': {**precision_recall(suspects, flipped),
                         # of the first len(flipped) of the list: what a reviewer sees first
                         'precision_at_flipped': len(set(ranked[:len(flipped)]) & flipped)
                                                 / max(1, len(flipped))},
      'near_duplicates': by_threshold,
      'near_duplicates_by_kind': summary['near_duplicates'],
      'outliers': summary['outliers'],
      'test_accuracy': {'noisy': noisy_accuracy,
                        'suspects_fixed': accuracy(fixed_head, test, dataset.test_labels),
                        'all_fixed': accuracy(ceiling_head, test, dataset.test_labels)},
      'train_labels_fixed': len(listed_train),
      'train_labels_flipped': len(flipped & train_set),
      'seconds': audit_seconds,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--datasets', nargs='+', default=['fashion_mnist', 'animal_mnist'])
  parser.add_argument('--noise', nargs='+', type=float, default=[0.05, 0.10])
  parser.add_argument('--per-class', type=int, default=100)
  parser.add_argument('--test-per-class', type=int, default=100)
  parser.add_argument('--copy-fraction', type=float, default=0.05)
  parser.add_argument('--seed', type=int, default=0)
  measure.add_report_arguments(parser)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', force=True)
  tf.get_logger().setLevel('ERROR')
  started = time.perf_counter()
  rows = []
  for name in args.datasets:
    dataset = datasets.load(name, args.per_class, args.test_per_class)
    config = label_efficiency.pipeline_config(dataset.class_names, args.overrides)
    model = label_efficiency.build_classifier(config, len(dataset.class_names))
    embedder = feature_cache.Embedder(classifier.feature_extractor(model))
    views = feature_cache.labeled_views(config, model.get_layer(classifier.AUGMENTATION_LAYER))
    plan = corrupted(dataset, args.copy_fraction, 0.0, args.seed)
    rng = np.random.default_rng(args.seed)
    copies = [altered_copy(dataset.pool_images[i], ALTERATIONS[j % len(ALTERATIONS)], rng)
              for j, i in enumerate(plan['copied'])]
    pool = embed(label_efficiency.encode_png(dataset.pool_images), embedder, config, views)
    copy_features = embed(copies, embedder, config, views)
    test = embed(label_efficiency.encode_png(dataset.test_images), embedder, config,
                 [None])[0]
    for noise in args.noise:
      # The same split and copies at every noise rate; only the flips differ.
      plan = corrupted(dataset, args.copy_fraction, noise, args.seed)
      row = {'dataset': name, 'noise': noise, 'copy_fraction': args.copy_fraction,
             'per_class': args.per_class,
             **run_condition(dataset, config, pool, copy_features, test, plan)}
      logging.info('%s', json.dumps(row))
      rows.append(row)
  report = {'rows': rows, 'seconds': time.perf_counter() - started, 'args': vars(args),
            'rules': [f'{t:.2f}' for t in THRESHOLDS] + [DEFAULT_RULE],
            'default_rule': {key: getattr(config.data_quality, key) for key in (
                'near_duplicate_similarity', 'near_duplicate_margin')}}
  print(markdown(report))
  if not args.no_write:
    measure.publish(report, RESULTS_JSON, TABLE_MD, markdown(report))


def _percent(value) -> str:
  return '–' if value is None else f'{value:.1%}'


def markdown(report: Dict[str, Any]) -> str:
  """The results as the tables docs/data_quality.md links to."""
  rows = report['rows']
  lines = [
      '# Data-quality audit: measured (`make bench-data-quality`)', '',
      f"Written by bench/data_quality.py ({report['seconds']:.0f} s); "
      f"arguments: `{json.dumps(report['args'])}`.", '',
      '## Suspect labels and what fixing them is worth', '',
      '| data set | noise | flipped | listed | precision | recall | precision of the '
      'first *flipped* | test acc. noisy | suspects fixed | all fixed |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for row in rows:
    suspects, acc = row['suspect_labels'], row['test_accuracy']
    lines.append(
        f"| {row['dataset']} | {row['noise']:.0%} | {suspects['planted']} | "
        f"{suspects['flagged']} | {_percent(suspects['precision'])} | "
        f"{_percent(suspects['recall'])} | {_percent(suspects['precision_at_flipped'])} | "
        f"{_percent(acc['noisy'])} | "
        f"{_percent(acc['suspects_fixed'])} | {_percent(acc['all_fixed'])} |")
  default = report['default_rule']
  headers = [f'≥ {rule}' if rule != DEFAULT_RULE else
             f"default (≥ {default['near_duplicate_similarity']:.2f}, or margin "
             f"{default['near_duplicate_margin']:.2f})" for rule in report['rules']]
  lines += ['', '## Near-duplicates: planted copies found', '',
            'Absolute thresholds alone, and the default rule (the threshold, or mutual '
            'nearest neighbours by a margin):', '',
            '| data set | noise | copies | ' + ' | '.join(
                f'{header} P / R (flagged)' for header in headers) + ' |',
            '|---|---:|---:|' + '---:|' * len(headers)]
  for row in rows:
    cells = [f"{_percent(c['precision'])} / {_percent(c['recall'])} ({c['flagged']})"
             for c in row['near_duplicates'].values()]
    lines.append(f"| {row['dataset']} | {row['noise']:.0%} | "
                 f"{next(iter(row['near_duplicates'].values()))['planted']} | "
                 + ' | '.join(cells) + ' |')
  lines += ['', 'Recall by alteration (the copies are the same at every noise rate):', '',
            '| data set | alteration | ' + ' | '.join(headers) + ' |',
            '|---|---|' + '---:|' * len(headers)]
  for row in rows:
    if row is not next(r for r in rows if r['dataset'] == row['dataset']):
      continue
    for alteration in ALTERATIONS:
      cells = [_percent(c['recall_by_alteration'][alteration])
               for c in row['near_duplicates'].values()]
      lines.append(f"| {row['dataset']} | {alteration} | " + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  main()
