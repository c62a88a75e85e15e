"""Times the default pipeline per component, and the Trainer against the backbone.

Runs the whole pipeline on the bundled sample with the cache off, in a fresh
output folder, then measures in the same process the backbone's pure forward
pass (frozen feature extractor, inference mode) at the same image size and
batch size. The ratio says how close the Trainer's feature cache (the one
pass of the backbone over every labeled view and unlabeled image) comes to
the backbone's own speed.

    python bench/pipeline_timing.py [--set section.key=value ...] [--report FILE]

Writes a JSON report (default bench/results/pipeline_timing.json) and prints it.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import json
import shutil
import tempfile
import time

import tensorflow as tf

from components import artifact_readers
from models.backbones import get_backbone
from pipeline import config as config_lib
from pipeline import dag, run_summary, runner


def forward_pass_images_per_second(backbone: str, image_size: int,
                                   batch_size: int, batches: int = 10) -> float:
  """Throughput of the frozen backbone alone on a fixed random batch."""
  model = get_backbone(backbone).build(image_size, 'imagenet')
  images = tf.random.uniform([batch_size, image_size, image_size, 3], -1.0, 1.0)
  infer = tf.function(lambda x: model(x, training=False))
  infer(images)  # trace and warm up
  start = time.perf_counter()
  for _ in range(batches):
    infer(images).numpy()
  return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--set', dest='overrides', action='append', default=[])
  parser.add_argument('--report', default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'results', 'pipeline_timing.json'))
  args = parser.parse_args()

  output_dir = tempfile.mkdtemp(prefix='bench-pipeline-')
  config = config_lib.load_config(None, [
      f'pipeline.output_dir={output_dir}', 'pipeline.enable_cache=false',
      *args.overrides])
  start = time.perf_counter()
  summary = runner.run_local(config)
  total_seconds = time.perf_counter() - start

  model_uri = next(
      os.path.join(root, 'Format-Serving') for root, dirs, _ in os.walk(
          os.path.join(config.pipeline.pipeline_root, 'Trainer', 'model'))
      if 'Format-Serving' in dirs)
  history = artifact_readers.training_history(model_uri)
  cache = history['feature_cache']
  cached_images = cache['labeled_images'] * cache['views'] + cache['unlabeled_images']
  trainer_ips = cached_images / cache['seconds']

  image_size = dag.image_size(config)
  backbone_ips = forward_pass_images_per_second(
      config.model.backbone, image_size, config.training.batch_size)
  report = {
      'total_seconds': round(total_seconds, 1),
      'components_seconds': {c.node_id: round(c.seconds, 1)
                             for c in summary.components},
      'blessed': summary.blessed,
      'eval_accuracy': summary.evaluation.get('accuracy'),
      'image_size': image_size,
      'batch_size': config.training.batch_size,
      'train_images': history['train_images'],
      'feature_cache_images': cached_images,
      'feature_cache_seconds': round(cache['seconds'], 1),
      'head_fit_seconds': round(history['head']['seconds'], 1),
      'trainer_images_per_second': round(trainer_ips, 1),
      'backbone_forward_images_per_second': round(backbone_ips, 1),
      'trainer_over_backbone_ratio': round(trainer_ips / backbone_ips, 3),
  }
  os.makedirs(os.path.dirname(args.report), exist_ok=True)
  with open(args.report, 'w') as f:
    json.dump(report, f, indent=2)
  print(run_summary.format_summary(summary))
  print(json.dumps(report, indent=2))
  shutil.rmtree(output_dir, ignore_errors=True)


if __name__ == '__main__':
  main()
