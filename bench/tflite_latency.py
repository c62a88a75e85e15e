"""Latency per image of a registry version's TFLite models on this CPU.

The float, dynamic-range and int8 models are converted again from the
version's SavedModel, the int8 one calibrated on the same train images the
RegistryPusher uses (its record names the examples and how many), so a
quantized model the version left out is measured too. Each is timed with the
TFLite interpreter (its default XNNPACK delegate) at 1 and 2 threads, one
image per call, on decoded eval images at the model's own size, the models
taking turns; and scored on the whole eval split beside the SavedModel.

    python bench/tflite_latency.py --output outputs [--version N] [--report FILE]

Writes a JSON report (default bench/results/tflite_latency.json) and its
Markdown table beside it, and prints the table.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from bench.measure import write_results
from components import contracts
from components.registry_pusher import edge_exports, tflite
from models import image_codec
from pipeline import config as config_lib
from registry import layout

THREADS = (1, 2)


def latencies_ms(classifiers: Dict[str, tflite.Classifier], pixels: np.ndarray,
                 repeats: int) -> Dict[str, np.ndarray]:
  """Milliseconds per call of each classifier, one image per call, after a
  warm-up pass; the models take turns pass by pass, so the load of a shared
  machine falls on all of them alike."""
  times: Dict[str, List[float]] = {name: [] for name in classifiers}
  for repeat in range(repeats + 1):
    for name, classify in classifiers.items():
      for image in pixels:
        start = time.perf_counter()
        classify(image[np.newaxis])
        if repeat:
          times[name].append((time.perf_counter() - start) * 1000)
  return {name: np.array(values) for name, values in times.items()}


def measure(version_dir: str, images: int, repeats: int):
  record = layout.read_record(version_dir)
  examples_uri = record['data']['examples_uri']
  exports = record.get('exports') or {}
  defaults = config_lib.ExportConfig()
  models, _, image_size = edge_exports.convert_all(version_dir, examples_uri, exports.get(
      'representative_images', defaults.representative_images))
  eval_images, _, reference, accuracies = edge_exports.eval_accuracies(
      version_dir, models, examples_uri, layout.read_labels(version_dir), image_size,
      exports.get('score_images', defaults.score_images))
  encoded = [image for batch, _ in edge_exports.sampled_batches(
      examples_uri, contracts.EVAL_SPLIT, images)[2] for image in batch]
  pixels = image_codec.batch_decoder(image_size)(tf.constant(encoded)).numpy()
  load_before = os.getloadavg()[0]
  timed = {threads: latencies_ms(
      {kind: tflite.Classifier(model, num_threads=threads) for kind, model in models.items()},
      pixels, repeats) for threads in THREADS}
  rows = []
  for kind, model in models.items():
    row = {'file': tflite.FILES[kind], 'kind': kind, 'bytes': len(model),
           'accuracy': accuracies[kind], 'drop': reference - accuracies[kind],
           'published': os.path.exists(os.path.join(version_dir, tflite.FILES[kind]))}
    for threads in THREADS:
      row[f'median_ms_{threads}'] = float(np.median(timed[threads][kind]))
      row[f'p90_ms_{threads}'] = float(np.percentile(timed[threads][kind], 90))
    rows.append(row)
  return {'version_dir': version_dir, 'image_size': image_size, 'eval_images': eval_images,
          'saved_model_accuracy': reference, 'timed_images': len(pixels),
          'repeats': repeats, 'load_average': [load_before, os.getloadavg()[0]],
          'models': rows}


def markdown(report) -> str:
  lines = [
      f'{report["eval_images"]} eval images, SavedModel accuracy '
      f'{report["saved_model_accuracy"]:.2%}; latency per image at {report["image_size"]} px, '
      f'one image per call, median (p90) of {report["timed_images"]} images x '
      f'{report["repeats"]}, the models taking turns; 1-minute load average '
      f'{report["load_average"][0]:.2f} before, {report["load_average"][1]:.2f} after.', '',
      '| model | size | eval accuracy | against the SavedModel (points) | published | '
      '1 thread, ms | 2 threads, ms |',
      '| --- | --- | --- | --- | --- | --- | --- |']
  for row in report['models']:
    lines.append(
        f'| `{row["file"]}` | {row["bytes"] / 2**20:.1f} MiB ({row["bytes"]:,} B) | '
        f'{row["accuracy"]:.2%} | {-row["drop"] * 100:+.2f} | '
        f'{"yes" if row["published"] else "no"} | '
        + ' | '.join(f'{row[f"median_ms_{t}"]:.2f} ({row[f"p90_ms_{t}"]:.2f})' for t in THREADS)
        + ' |')
  return '\n'.join(lines) + '\n'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--output', default='outputs', help="a run's output folder")
  parser.add_argument('--version', type=int, help='registry version (default: the newest)')
  parser.add_argument('--images', type=int, default=20, help='eval images timed')
  parser.add_argument('--repeats', type=int, default=10, help='passes over them')
  parser.add_argument('--report', default=os.path.join('bench', 'results', 'tflite_latency.json'))
  args = parser.parse_args()
  config = config_lib.load_config(None, [f'pipeline.output_dir={os.path.abspath(args.output)}'])
  version_dir = layout.version_dir(config.pipeline.registry, config.pipeline.model_name,
                                   args.version)
  report = measure(version_dir, args.images, args.repeats)
  table = markdown(report)
  write_results(args.report, report, table)
  print(table)


if __name__ == '__main__':
  main()
