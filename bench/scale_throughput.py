"""Throughput, memory and storage of the Beam data steps at 1k and 10k images.

For each data-set size N (default 1000 and 10000) this writes an image folder
of N Fashion-MNIST PNGs (N/10 per class, from the Debian package's test split,
with `data/regenerate_sample.py`), then runs the real pipeline up to Transform
(ImageExampleGen, ImportSchemaGen, StatisticsGen, Transform; cache off, fresh
output folder) once per Beam worker count (default 1 and 2), each in its own
process, and reports:

  * seconds per component (from the ML Metadata store, `run_summary.summarize`)
    and images/second, and the speed-up of every worker count over the first;
  * bytes per example of ImageExampleGen's and Transform's outputs (gzipped
    TFRecords on disk, / N) and the uncompressed size of a transformed record;
  * peak memory: the pipeline process and every Beam worker subprocess are
    sampled with psutil (RSS, every 0.2 s) from this parent process; peaks are
    given per component window (times from MLMD) and checked against
    `getrusage` (RUSAGE_SELF / RUSAGE_CHILDREN) of the pipeline process.

  * the CPU seconds of the measured processes and of everything else on the
    machine during the run (the machine is shared; timings under load are
    not comparable), and the bytes per transformed example stored as float32
    (as now) or uint8, raw and gzipped, for Fashion-MNIST and natural photos.

Because the machine is shared, each configuration first waits (up to
--quiet-wait seconds) until other processes use fewer than --quiet-cores
cores. DirectRunner keeps a Beam job's data in memory, so a configuration
is stopped, and reported as such with the components it finished, when the
machine has less than --min-free-gb available or its processes exceed
--max-memory-gb: better than the kernel's OOM killer choosing a process.

Outputs of each configuration are deleted as soon as it is measured (10k
transformed examples at 224 px are gigabytes). The results go to a JSON file
and a Markdown table (default bench/results/scale_throughput.{json,md}),
rewritten after every configuration.

    PYTHONPATH=. .venv/bin/python bench/scale_throughput.py \\
        [--sizes 1000 10000] [--workers 1 2] [--no-statistics] \\
        [--max-memory-gb GB] [--min-free-gb 2] [--quiet-wait 900] \\
        [--source /usr/share/datasets/fashion-mnist] [--work-dir DIR] \\
        [--report bench/results/scale_throughput.json] [--set section.key=value ...]

Needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist).
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import datetime
import gzip
import json
import platform
import resource
import shutil
import statistics
import tempfile
import time
from typing import Any, Dict, List, Optional

import psutil

from bench import measure
from data import regenerate_sample

DEFAULT_REPORT = os.path.join(REPO_ROOT, 'bench', 'results', 'scale_throughput.json')
CLASSES = len(regenerate_sample.CLASS_NAMES)
# The Debian package's test split holds 1000 images of each class.
MAX_IMAGES = 1000 * CLASSES
# Components timed, in pipeline order; ImportSchemaGen only copies a file.
TIMED = ('ImageExampleGen', 'StatisticsGen', 'Transform')


# --------------------------------------------------------------------------
# One configuration, in its own process (`--measure-one`).
# --------------------------------------------------------------------------

def _output_bytes(pipeline_root: str, component: str) -> Dict[str, int]:
  """Bytes on disk of each output of a component (all artifact ids)."""
  root = os.path.join(pipeline_root, component)
  if not os.path.isdir(root):
    return {}
  return {name: measure.dir_bytes(os.path.join(root, name))
          for name in sorted(os.listdir(root))
          if os.path.isdir(os.path.join(root, name)) and name != '.system'}


def _transformed_record_bytes(pipeline_root: str, limit: int = 200) -> Optional[float]:
  """Mean uncompressed size of the first `limit` transformed tf.Examples."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(
      os.path.join(d, f)
      for d, _, names in os.walk(os.path.join(pipeline_root, 'Transform',
                                              'transformed_examples'))
      for f in names if f.endswith('.gz'))
  if not files:
    return None
  sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(
      files[:1], compression_type='GZIP').take(limit)]
  return statistics.mean(sizes) if sizes else None


def measure_one(args: argparse.Namespace) -> None:
  """Runs ExampleGen (+ StatisticsGen) + Transform once; writes a JSON result."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  # Partial runs' options are not re-exported under tfx.v1.
  from tfx.orchestration.pipeline import RunOptions  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from pipeline import dag, run_summary  # pylint: disable=g-import-not-at-top
  from pipeline.beam_args import beam_pipeline_args  # pylint: disable=g-import-not-at-top

  config = config_lib.load_config(None, [
      f'data.path={args.data}', f'pipeline.output_dir={args.output}',
      'pipeline.enable_cache=false', 'beam.runner=direct',
      f'beam.workers={args.beam_workers}', *args.overrides])
  to_nodes = ['Transform'] + (['StatisticsGen'] if args.statistics else [])
  start = time.time()
  tfx.orchestration.LocalDagRunner().run(
      dag.create_pipeline(config, metadata_connection_config=dag.local_metadata(config)),
      run_options=RunOptions(to_nodes=to_nodes))
  end = time.time()

  summary = run_summary.summarize(config.pipeline.metadata_path)
  failed = [c.node_id for c in summary.components if c.state != 'COMPLETE']
  if failed:
    raise RuntimeError(f'Components did not complete: {failed}')
  root = config.pipeline.pipeline_root
  result = {
      'images': args.images,
      'beam_workers': args.beam_workers,
      'beam_args': beam_pipeline_args(config),
      'image_size': dag.image_size(config),
      'backbone': config.model.backbone,
      'run_seconds': round(end - start, 2),
      'run_window': [start, end],
      'components_seconds': {c.node_id: c.seconds for c in summary.components},
      'component_windows': measure.component_windows(config.pipeline.metadata_path),
      'quarantined': summary.quarantined,
      'output_bytes': {
          'ImageExampleGen': _output_bytes(root, 'ImageExampleGen'),
          'StatisticsGen': _output_bytes(root, 'StatisticsGen'),
          'Transform': _output_bytes(root, 'Transform'),
      },
      'transformed_record_uncompressed_bytes': _transformed_record_bytes(root),
      # Linux reports ru_maxrss in KiB. RUSAGE_CHILDREN is the largest of the
      # children that have exited and been waited for (Beam workers, pip).
      'getrusage_self_maxrss_mb': resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024,
      'getrusage_children_maxrss_mb': resource.getrusage(
          resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
  }
  with open(args.result, 'w') as f:
    json.dump(result, f, indent=2)


# --------------------------------------------------------------------------
# The parent: data, one child per configuration, memory sampling, report.
# --------------------------------------------------------------------------

def _relative(windows: Dict[str, List[Any]],
              samples: List[Dict[str, Any]]) -> Dict[str, List[float]]:
  """Component windows in seconds since the first sample (the timeline's origin)."""
  if not samples:
    return {}
  origin = samples[0]['t']
  return {node: [round(w[0] - origin, 1), round(w[1] - origin, 1)]
          for node, w in windows.items()}


def _run_child(images: int, workers: int, data_dir: str, output_dir: str,
               args: argparse.Namespace) -> Dict[str, Any]:
  result_path = os.path.join(output_dir, 'result.json')
  os.makedirs(output_dir, exist_ok=True)
  command = [sys.executable, os.path.abspath(__file__), '--measure-one',
             '--data', data_dir, '--output', output_dir, '--result', result_path,
             '--images', str(images), '--beam-workers', str(workers)]
  command += ['--no-statistics'] if not args.statistics else []
  for override in args.overrides:
    command += ['--set', override]
  env = dict(os.environ)
  # Beam's worker subprocesses import the pipeline's modules too.
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (REPO_ROOT, env.get('PYTHONPATH', '')) if p)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  log_path = os.path.join(args.work_dir, f'log_{images}_{workers}w.txt')

  quiet = measure.wait_until_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else {}
  print(f'[{datetime.datetime.now():%H:%M:%S}] N={images} beam.workers={workers}: '
        f'running (log {log_path})', flush=True)
  run = measure.run_sampled(command, log_path, int(args.min_free_gb * 2**30),
                            int(args.max_memory_gb * 2**30), env=env)
  code, sampler, wall = run.code, run.sampler, run.seconds
  common = {
      'images': images, 'beam_workers': workers,
      'process_seconds': round(wall, 1),
      # CPU seconds of the measured process tree and of everything else on
      # the machine over the same wall time (this machine is shared).
      'cpu_seconds': {'measured_processes': round(run.cpu_seconds, 1),
                      'other_processes': round(run.other_cpu_seconds, 1)},
      'other_processes_mean_cores': round(run.other_cpu_seconds / wall, 2),
      **quiet,
      'memory_timeline_mb': measure.timeline(sampler.samples),
  }
  if code != 0 or not os.path.exists(result_path):
    if sampler.stopped_for:
      windows = {}
      try:
        windows = measure.component_windows(os.path.join(output_dir, 'metadata.sqlite'),
                                     with_state=True)
      except Exception:  # pylint: disable=broad-except
        pass
      running = max(windows, key=lambda k: windows[k][0]) if windows else None
      if running and sampler.samples:   # it ran until the last sample
        windows[running][1] = sampler.samples[-1]['t']
      done = {node: w for node, w in windows.items() if w[2] == 'COMPLETE'}
      return {**common, 'status': 'stopped',
              'stopped_for': sampler.stopped_for,
              # Components that finished before the stop, from ML Metadata.
              'components_seconds': {node: round(w[1] - w[0], 3) for node, w in done.items()},
              'images_per_second': {node: round(images / (w[1] - w[0]), 1)
                                    for node, w in done.items()
                                    if node in TIMED and w[1] > w[0]},
              'running_component': running,
              'component_started_seconds_before_stop':
                  round(sampler.samples[-1]['t'] - windows[running][0], 1) if running else None,
              'memory_peaks': {
                  'run': measure.peaks(sampler.samples),
                  **{node: measure.peaks(sampler.samples, w[:2])
                     for node, w in windows.items() if node in TIMED}},
              'component_windows_seconds': _relative(windows, sampler.samples)}
    with open(log_path) as log:
      tail = log.read()[-4000:]
    raise RuntimeError(f'N={images} workers={workers} failed (exit {code}); '
                       f'log {log_path}:\n{tail}')
  with open(result_path) as f:
    result = json.load(f)
  windows = result.pop('component_windows')
  result.pop('run_window')
  result.update(common)
  result['status'] = 'ok'
  result['memory_peaks'] = {
      'run': measure.peaks(sampler.samples),
      **{node: measure.peaks(sampler.samples, window)
         for node, window in windows.items() if node in TIMED}}
  result['component_windows_seconds'] = _relative(windows, sampler.samples)
  _derive(result)
  return result


def _derive(result: Dict[str, Any]) -> None:
  """Images/second and bytes/example from the raw measurements."""
  n = result['images']
  seconds = result['components_seconds']
  result['images_per_second'] = {
      node: round(n / seconds[node], 1) for node in TIMED if seconds.get(node)}
  data_steps = seconds['ImageExampleGen'] + seconds['Transform']
  result['examplegen_plus_transform_seconds'] = round(data_steps, 1)
  result['images_per_second']['ExampleGen+Transform'] = round(n / data_steps, 1)
  out = result['output_bytes']
  result['bytes_per_example'] = {
      'ImageExampleGen examples': round(out['ImageExampleGen'].get('examples', 0) / n),
      'Transform transformed_examples': round(
          out['Transform'].get('transformed_examples', 0) / n),
      'Transform all outputs': round(sum(out['Transform'].values()) / n),
  }


def _speedups(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
  """Seconds with the first worker count / seconds with each other count."""
  speedups = {}
  for n in sorted({r['images'] for r in results}):
    runs = [r for r in results if r['images'] == n and r['status'] == 'ok']
    if len(runs) < 2:
      continue
    base = runs[0]
    for run in runs[1:]:
      key = f'{n} images: {run["beam_workers"]} vs {base["beam_workers"]} workers'
      ratio = {node: round(base['components_seconds'][node] /
                           run['components_seconds'][node], 2)
               for node in TIMED if run['components_seconds'].get(node)}
      ratio['ExampleGen+Transform'] = round(
          base['examplegen_plus_transform_seconds'] /
          run['examplegen_plus_transform_seconds'], 2)
      ratio['whole process'] = round(base['process_seconds'] / run['process_seconds'], 2)
      speedups[key] = ratio
  return speedups


def storage_reference(source: str, image_size: int, backbone: str) -> Dict[str, Any]:
  """Bytes per transformed example, float32 (as stored now) vs uint8, raw and gzipped.

  On Fashion-MNIST images and on natural photos (scikit-image's sample
  photos), through the pipeline's own decode/resize/normalize functions.
  """
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from models import image_codec  # pylint: disable=g-import-not-at-top
  from models.backbones import get_backbone  # pylint: disable=g-import-not-at-top
  normalize = get_backbone(backbone).normalize

  def example(feature: tf.train.Feature) -> bytes:
    return tf.train.Example(features=tf.train.Features(
        feature={'image_xf': feature})).SerializeToString()

  def sizes(encoded: List[bytes]) -> Dict[str, int]:
    images = image_codec.decode_and_resize(tf.constant(encoded), image_size)
    floats = normalize(images).numpy().astype(np.float32)
    uint8 = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8).numpy()
    f32 = [example(tf.train.Feature(float_list=tf.train.FloatList(value=a.reshape(-1))))
           for a in floats]
    u8 = [example(tf.train.Feature(bytes_list=tf.train.BytesList(value=[a.tobytes()])))
          for a in uint8]
    mean = lambda xs: round(statistics.mean(xs))  # pylint: disable=unnecessary-lambda-assignment
    return {
        'float32_raw': mean(len(x) for x in f32),
        'float32_gzip': mean(len(gzip.compress(x, 6)) for x in f32),
        'uint8_raw': mean(len(x) for x in u8),
        'uint8_gzip': mean(len(gzip.compress(x, 6)) for x in u8),
        'images': len(encoded),
    }

  def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()

  images, _ = regenerate_sample.load_test_split(source)
  reference = {'fashion_mnist_28px_png': sizes([png(images[i]) for i in range(20)])}
  try:
    import skimage.data  # pylint: disable=g-import-not-at-top
    photos = [png(getattr(skimage.data, name)())
              for name in ('chelsea', 'astronaut', 'coffee', 'rocket')]
    reference['natural_photos_skimage'] = sizes(photos)
  except ImportError:
    pass
  return reference


def _markdown(report: Dict[str, Any]) -> str:
  results = report['results']
  ok = [r for r in results if r['status'] == 'ok']
  lines = [
      f'Measured {report["date"]} on {report["machine"]}; image size '
      f'{report["image_size"]} px, backbone {report["backbone"]}, DirectRunner '
      '(1 worker: in_memory; N>1: multi_processing). Seconds from ML Metadata; '
      f'memory: {report["memory_method"]}.', '',
      '| images | Beam workers | ExampleGen s | StatisticsGen s | Transform s | '
      'ExampleGen+Transform img/s | Transform img/s | process s | '
      'peak RSS pipeline process (MB) | peak RSS per Beam worker (MB) | '
      'peak RSS all processes (MB) | other processes\' CPU (cores) |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for r in results:
    mem = r['memory_peaks']['run']
    tail = (f'{r["process_seconds"]:.1f} | {mem.get("main_mb", 0)} | '
            f'{mem.get("worker_max_mb", 0) or "in-process"} | {mem.get("tree_total_mb", 0)} | '
            f'{r["other_processes_mean_cores"]} |')
    if r['status'] != 'ok':
      s = r['components_seconds']
      cell = lambda node: (f'{s[node]:.1f}' if node in s else  # pylint: disable=cell-var-from-loop
                           f'stopped after {r["component_started_seconds_before_stop"]}'
                           if node == r['running_component'] else '-')
      lines.append(f'| {r["images"]} | {r["beam_workers"]} | {cell("ImageExampleGen")} | '
                   f'{cell("StatisticsGen")} | {cell("Transform")} | - | - | {tail}')
      continue
    s = r['components_seconds']
    ips = r['images_per_second']
    lines.append(
        f'| {r["images"]} | {r["beam_workers"]} | {s["ImageExampleGen"]:.1f} | '
        f'{s.get("StatisticsGen", float("nan")):.1f} | {s["Transform"]:.1f} | '
        f'{ips["ExampleGen+Transform"]:.1f} | {ips["Transform"]:.1f} | {tail}')
  lines += [f'\nN={r["images"]}, {r["beam_workers"]} worker(s): stopped in '
            f'{r["running_component"]}, {r["stopped_for"]}.'
            for r in results if r['status'] != 'ok']
  columns = ('ImageExampleGen', 'StatisticsGen', 'Transform', 'ExampleGen+Transform',
             'whole process')
  lines += ['', '| speed-up (seconds ratio) | ' + ' | '.join(columns) + ' |',
            '| --- | ---: | ---: | ---: | ---: | ---: |']
  for key, ratio in report['speedups'].items():
    lines.append(f'| {key} | ' + ' | '.join(str(ratio.get(k, '')) for k in columns) + ' |')
  lines += ['', '| images | Beam workers | ExampleGen bytes/example | '
            'Transform transformed_examples bytes/example (gzip) | '
            'uncompressed transformed record bytes | '
            'Transform peak RSS process / per worker (MB) |',
            '| ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in ok:
    b = r['bytes_per_example']
    t = r['memory_peaks'].get('Transform', {})
    lines.append(
        f'| {r["images"]} | {r["beam_workers"]} | {b["ImageExampleGen examples"]} | '
        f'{b["Transform transformed_examples"]} | '
        f'{round(r["transformed_record_uncompressed_bytes"] or 0)} | '
        f'{t.get("main_mb", "?")} / {t.get("worker_max_mb") or "in-process"} |')
  if report.get('storage_reference'):
    lines += ['', '| bytes per transformed example | float32 raw | float32 gzip | '
              'uint8 raw | uint8 gzip |', '| --- | ---: | ---: | ---: | ---: |']
    for name, ref in report['storage_reference'].items():
      lines.append(f'| {name} ({ref["images"]} images) | {ref["float32_raw"]} | '
                   f'{ref["float32_gzip"]} | {ref["uint8_raw"]} | {ref["uint8_gzip"]} |')
  return '\n'.join(lines) + '\n'


def _write_report(report: Dict[str, Any], path: str) -> str:
  report['speedups'] = _speedups(report['results'])
  markdown = _markdown(report)
  measure.write_results(path, report, markdown)
  return markdown


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[1000, 10000],
                      help='numbers of images, multiples of 10 up to 10000')
  parser.add_argument('--workers', type=int, nargs='+', default=[1, 2],
                      help='beam.workers values; speed-ups are relative to the first')
  parser.add_argument('--no-statistics', dest='statistics', action='store_false',
                      help='skip StatisticsGen')
  parser.add_argument('--no-storage-reference', dest='storage_reference',
                      action='store_false', help='skip the float32 vs uint8 storage table')
  parser.add_argument('--source', default=regenerate_sample.DEFAULT_SOURCE,
                      help='folder with the Fashion-MNIST t10k IDX files')
  parser.add_argument('--work-dir', default='', help='scratch folder (default: a new temp folder)')
  parser.add_argument('--keep', action='store_true', help='keep images and pipeline outputs')
  parser.add_argument('--report', default=DEFAULT_REPORT,
                      help='JSON report; the Markdown table goes next to it (.md)')
  parser.add_argument('--min-free-gb', type=float, default=2.0,
                      help='stop a configuration when the machine has less memory available')
  parser.add_argument('--max-memory-gb', type=float, default=None,
                      help='stop a configuration whose processes use more '
                           '(default: 75%% of the RAM; 0: no limit)')
  parser.add_argument('--quiet-wait', type=float, default=900.0,
                      help='before each configuration, wait up to this many seconds '
                           'for other processes to go quiet (0: do not wait)')
  parser.add_argument('--quiet-cores', type=float, default=0.3,
                      help='"quiet": other processes use fewer cores than this')
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      help='config override section.key=value (e.g. model.image_size=128)')
  # Internal: one configuration in a child process.
  parser.add_argument('--measure-one', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--data', help=argparse.SUPPRESS)
  parser.add_argument('--output', help=argparse.SUPPRESS)
  parser.add_argument('--result', help=argparse.SUPPRESS)
  parser.add_argument('--images', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--beam-workers', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure_one:
    measure_one(args)
    return

  bad = [n for n in args.sizes if n < CLASSES or n % CLASSES or n > MAX_IMAGES]
  if bad:
    parser.error(f'--sizes {bad}: each must be a multiple of {CLASSES} between '
                 f'{CLASSES} and {MAX_IMAGES} (the test split has 1000 images per class)')
  if any(w < 1 for w in args.workers):
    parser.error('--workers must be >= 1')
  try:
    images, labels = regenerate_sample.load_test_split(args.source)
  except regenerate_sample.SampleError as error:
    sys.exit(f'error: the Fashion-MNIST data set is missing.\n'
             f'Install it with: apt-get install {regenerate_sample.DEBIAN_PACKAGE}\n'
             f'(or pass --source DIR)\n\n{error}')

  if args.max_memory_gb is None:
    args.max_memory_gb = round(0.75 * psutil.virtual_memory().total / 2**30, 1)
  work_dir_given = bool(args.work_dir)
  args.work_dir = args.work_dir or tempfile.mkdtemp(prefix='bench-scale-')
  os.makedirs(args.work_dir, exist_ok=True)
  # Transformed examples are at most ~602 KB each at 224 px (float32, before gzip).
  need = max(args.sizes) * 700_000
  free = shutil.disk_usage(args.work_dir).free
  if free < need:
    sys.exit(f'error: {args.work_dir} has {free / 1e9:.1f} GB free; '
             f'{need / 1e9:.1f} GB may be needed for {max(args.sizes)} images')

  report = {
      'date': datetime.date.today().isoformat(),
      'machine': f'{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} '
                 f'GiB RAM, {platform.platform()}',
      'image_size': None,
      'backbone': None,
      'command': ' '.join(sys.argv),
      'stop_when': {'processes_above_gb': args.max_memory_gb or None,
                    'machine_available_below_gb': args.min_free_gb},
      'memory_method': ('RSS of the pipeline process and of each descendant, sampled '
                        f'with psutil every {measure.SAMPLE_SECONDS} s from a parent process; '
                        f'Beam workers are the descendants running {measure.BEAM_WORKER_MARK}; '
                        'per-component peaks use the execution windows in ML Metadata'),
      'results': [],
  }
  for n in args.sizes:
    data_dir = os.path.join(args.work_dir, f'images_{n}')
    shutil.rmtree(data_dir, ignore_errors=True)
    regenerate_sample.write_sample(
        images, regenerate_sample.select(labels, n // CLASSES), data_dir)
    for workers in args.workers:
      output_dir = os.path.join(args.work_dir, f'run_{n}_{workers}w')
      shutil.rmtree(output_dir, ignore_errors=True)
      result = _run_child(n, workers, data_dir, output_dir, args)
      report['results'].append(result)
      if not args.keep:
        shutil.rmtree(output_dir, ignore_errors=True)
      if result['status'] == 'ok':
        report['image_size'] = result['image_size']
        report['backbone'] = result['backbone']
        s = result['components_seconds']
        print(f'    ExampleGen {s["ImageExampleGen"]:.1f} s, StatisticsGen '
              f'{s.get("StatisticsGen", 0):.1f} s, Transform {s["Transform"]:.1f} s, '
              f'process {result["process_seconds"]} s', end='')
      else:
        print(f'    STOPPED in {result["running_component"]}: {result["stopped_for"]}',
              end='')
      print(f'; other processes used {result["other_processes_mean_cores"]} cores; '
            f'peak RSS {result["memory_peaks"]["run"]}', flush=True)
      _write_report(report, args.report)   # partial results survive an interruption
    if not args.keep:
      shutil.rmtree(data_dir, ignore_errors=True)

  if args.storage_reference and report['image_size']:
    report['storage_reference'] = storage_reference(
        args.source, report['image_size'], report['backbone'])
  print(_write_report(report, args.report))
  print(f'Wrote {args.report} and {os.path.splitext(args.report)[0]}.md')
  if not args.keep and not work_dir_given:
    shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == '__main__':
  main()
