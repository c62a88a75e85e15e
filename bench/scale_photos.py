"""The whole default pipeline on 1k, 5k and 20k real-size photos, now and before.

For each size N (default 1000, 5000, 20000) this writes N JPEG photos of
640x480, 10 classes of N/10, each class one colour photo bundled with
scikit-image or scikit-learn (so nothing is downloaded), drawn as random crops
(0.5-1.0 of the photo's sides), flipped at random, with brightness, contrast
and saturation shifted by up to 20 % and JPEG quality 80-95 (~40-150 KB a
file, like a camera's after resizing). With --unlabeled-fraction, a flat folder
of that many more images drawn the same way is the unlabeled pool. Folders are
seeded, kept under --work-dir and reused while they hold the right count.

Each N is run with and without the pool (--pools) as a new user would run it,
in its own process and a fresh output folder: `python -m pipeline schema`
writes the photos' schema, then `python -m pipeline run --data ... [--unlabeled
...] --output ... --set data.schema_file=...`. The same command runs the
previous design (--baseline-commit, checked out as a git worktree under
--work-dir) at --baseline-sizes, and the current one with the backbone's pass
as a Beam step (`--set training.beam_features=true`) at --beam-features-sizes.
Per run it records:

  * seconds per component (the run's printed summary) and photos/second of
    ImageExampleGen, Transform and the Trainer (N / s) and of the Evaluator
    (eval images / s); the Trainer's feature-cache rates from its log;
  * peak RSS of the pipeline process, of each Beam worker and of the whole
    process tree, sampled every 0.2 s (bench/measure.py); a run whose tree
    passes --max-memory-gb is stopped and reported as such;
  * bytes of the artifacts (pipeline_root without the Trainer's models),
    bytes of the input photos, eval accuracy, exit code (and the log's last
    lines when it is not 0).

Before the runs, on a quiet machine, it measures the default backbone's pure
forward pass (bench/pipeline_timing.py), against which it checks targets:
feature cache labeled rate / forward rate >= 0.85 (N >= 5000); all components'
seconds <= 2 x the backbone-only seconds (labeled images x views + unlabeled
images + eval images in the Trainer's audit and again in the Evaluator, at the
forward rate); peak tree RSS <= 6 GB and <= the
smallest N's peak + the input's bytes; artifacts <= 2 x the input's bytes.

The results go to bench/results/scale_photos.{json,md} (--report), rewritten
after every run. The machine should be otherwise idle: each run first waits
(up to --quiet-wait s) for other processes to go quiet, and records the cores
they used meanwhile.

    PYTHONPATH=. .venv/bin/python bench/scale_photos.py \\
        [--sizes 1000 5000 20000] [--pools none with] [--unlabeled-fraction 0.2] \\
        [--baseline-commit 51780ff] [--baseline-sizes 1000 5000] \\
        [--beam-features-sizes 1000 5000] \\
        [--max-memory-gb 20] [--min-free-gb 2] [--quiet-wait 900] [--keep] \\
        [--work-dir outputs/bench/scale_photos] [--report bench/results/scale_photos.json]

or `make bench-scale ARGS='...'`.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import datetime
import functools
import io
import json
import multiprocessing
import platform
import re
import shutil
import subprocess
from typing import Any, Dict, List, Optional

import numpy as np
import psutil
from PIL import Image, ImageEnhance, ImageOps

from bench import measure

DEFAULT_REPORT = os.path.join(REPO_ROOT, 'bench', 'results', 'scale_photos.json')
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, 'outputs', 'bench', 'scale_photos')
# scikit-image's colour photos that load offline (cat() is chelsea again;
# lily and skin need a download), then scikit-learn's two sample photos.
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field',
                  'immunohistochemistry', 'retina')
SKLEARN_PHOTOS = ('china', 'flower')
CLASSES = len(SKIMAGE_PHOTOS) + 1 + len(SKLEARN_PHOTOS)   # + stereo_motorcycle's left view
PHOTO_SIZE = (640, 480)
SEED = 2024
# Summary lines of `python -m pipeline run`, and the Trainer's log line.
COMPONENT_LINE = re.compile(r'^  (\S+)\s+([A-Z]+)\s+(\d+\.\d) s$', re.M)
EVAL_LINE = re.compile(r'^Eval accuracy: (\d\.\d+) on (\d+) images', re.M)
CACHE_LINE = re.compile(r'Feature cache: (\d+) (.+?) x (\d+) view\(s\) in '
                        r'(\d+\.\d) s \((\d+\.\d) images/s\)')
# BackboneFeatures' summary (training.beam_features), and each split in it.
STEP_LINE = re.compile(r'BackboneFeatures: (.+) in (\d+\.\d) s \(')
STEP_SPLIT = re.compile(r'(\d+) (\w+) images x (\d+) view\(s\)')
# The step's splits as the Trainer's feature-cache passes.
STEP_PASSES = {'train': 'labeled images', 'unlabeled': 'unlabeled images',
               'eval': 'eval images (audit)'}
BEAM_FEATURES = 'training.beam_features=true'
RATE_COMPONENTS = ('ImageExampleGen', 'Transform', 'BackboneFeatures', 'Trainer')
FORWARD_PASS_MARK = 'forward pass: '
TARGETS = {'cache_over_forward': 0.85, 'cache_target_from_n': 5000,
           'components_over_backbone_only': 2.0, 'peak_tree_gb': 6.0,
           'artifacts_over_input': 2.0}
GB = 1 << 30


# --------------------------------------------------------------------------
# Photos.
# --------------------------------------------------------------------------

def _source_photos() -> Dict[str, Image.Image]:
  """One distinct colour photo per class, from packages already installed."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
  arrays = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS}
  arrays['motorcycle'] = skimage.data.stereo_motorcycle()[0]
  arrays.update({name: load_sample_image(f'{name}.jpg') for name in SKLEARN_PHOTOS})
  return {name: Image.fromarray(array) for name, array in sorted(arrays.items())}


def _draw(photo: Image.Image, rng: np.random.Generator) -> bytes:
  """A JPEG of a random crop of `photo`, flipped and colour-shifted at random."""
  scale = rng.uniform(0.5, 1.0)
  width, height = photo.size
  crop_w, crop_h = round(width * scale), round(height * scale)
  left = int(rng.integers(0, width - crop_w + 1))
  top = int(rng.integers(0, height - crop_h + 1))
  image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(
      PHOTO_SIZE, Image.BICUBIC)
  if rng.random() < 0.5:
    image = ImageOps.mirror(image)
  for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
    image = enhancer(image).enhance(rng.uniform(0.8, 1.2))
  buffer = io.BytesIO()
  image.save(buffer, format='JPEG', quality=int(rng.integers(80, 96)))
  return buffer.getvalue()


def _file_count(folder: str) -> int:
  return sum(len(files) for _, _, files in os.walk(folder))


_PHOTOS: Dict[str, Image.Image] = {}   # each writer process's source photos


def _load_source_photos() -> None:
  _PHOTOS.update(_source_photos())


def _write_photo(folder: str, labeled: bool, i: int) -> None:
  """Photo number `i`, from a seed of its own: <class>/<i // classes>.jpg, or
  <i>.jpg in a flat pool."""
  names = sorted(_PHOTOS)
  if labeled:
    rng = np.random.default_rng([SEED, 0, i])
    name = names[i % CLASSES]
    path = os.path.join(folder, name, f'{i // CLASSES}.jpg')
  else:
    rng = np.random.default_rng([SEED, 1, i])
    name = names[int(rng.integers(CLASSES))]
    path = os.path.join(folder, f'{i}.jpg')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(_draw(_PHOTOS[name], rng))


def _write_photos(folder: str, count: int, labeled: bool) -> None:
  """`count` photos: <class>/<i>.jpg (count/10 a class) or a flat pool, drawn
  on every core. Each image has its own seed, so a smaller folder is a
  subset of a larger."""
  if os.path.isdir(folder) and _file_count(folder) == count:
    return
  print(f'Writing {count} photos to {folder}', flush=True)
  shutil.rmtree(folder, ignore_errors=True)
  with multiprocessing.Pool(os.cpu_count(), initializer=_load_source_photos) as pool:
    for _ in pool.imap_unordered(functools.partial(_write_photo, folder, labeled),
                                 range(count), chunksize=64):
      pass


def _folder_stats(folder: str) -> Dict[str, Any]:
  files, total = _file_count(folder), measure.dir_bytes(folder)
  return {'files': files, 'bytes': total, 'mean_kb': round(total / files / 1000, 1)}


# --------------------------------------------------------------------------
# Measurements.
# --------------------------------------------------------------------------

def forward_pass() -> None:
  """Prints the default backbone's forward-pass rate (in a child: the parent
  stays free of TensorFlow while it samples the runs)."""
  from bench import pipeline_timing  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from pipeline import dag  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(None, [])
  image_size = dag.image_size(config)
  rate = pipeline_timing.forward_pass_images_per_second(
      config.model.backbone, image_size, config.training.batch_size)
  print(FORWARD_PASS_MARK + json.dumps({
      'backbone': config.model.backbone, 'image_size': image_size,
      'batch_size': config.training.batch_size, 'images_per_second': round(rate, 1)}),
        flush=True)


def _log_path(args: argparse.Namespace, name: str) -> str:
  os.makedirs(os.path.join(args.work_dir, 'logs'), exist_ok=True)
  return os.path.join(args.work_dir, 'logs', f'{name}.log')


def _measure_forward_pass(args: argparse.Namespace) -> Dict[str, Any]:
  quiet = measure.wait_until_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else {}
  log_path = _log_path(args, 'forward-pass')
  print(f'Measuring the backbone forward pass (log {log_path})', flush=True)
  run = measure.run_sampled([sys.executable, os.path.abspath(__file__), '--forward-pass'],
                            log_path, int(args.min_free_gb * GB),
                            int(args.max_memory_gb * GB), env=_env(REPO_ROOT))
  with open(log_path, errors='replace') as f:
    lines = f.read().splitlines()
  results = [line[len(FORWARD_PASS_MARK):] for line in lines
             if line.startswith(FORWARD_PASS_MARK)]
  if run.code or not results:
    sys.exit(f'error: the forward-pass measurement failed (exit {run.code}); '
             f'{log_path} ends with:\n' + '\n'.join(lines[-20:]))
  return {**json.loads(results[-1]), **quiet, 'other_processes_mean_cores':
          round(run.other_cpu_seconds / run.seconds, 2)}


def _env(repo: str) -> Dict[str, str]:
  """Only `repo` on the path: the baseline must not import this checkout's modules."""
  env = dict(os.environ, PYTHONPATH=repo)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  return env


def _git(*args: str) -> str:
  return subprocess.run(['git', '-C', REPO_ROOT, *args], check=True,
                        capture_output=True, text=True).stdout.strip()


def _baseline_worktree(work_dir: str, commit: str) -> str:
  """A worktree of `commit` under `work_dir` (made once, then reused)."""
  path = os.path.join(work_dir, 'baseline')
  if not os.path.isdir(path):
    _git('worktree', 'add', '--detach', path, commit)
  head = subprocess.run(['git', '-C', path, 'rev-parse', 'HEAD'], check=True,
                        capture_output=True, text=True).stdout.strip()
  if head != _git('rev-parse', commit):
    sys.exit(f'error: {path} is at {head}, not {commit}; remove it with '
             f'git worktree remove --force {path}')
  return path


def _artifact_bytes(pipeline_root: str) -> Dict[str, int]:
  """Bytes under pipeline_root, the Trainer's models (Trainer/model*) apart."""
  trainer = os.path.join(pipeline_root, 'Trainer')
  models = sum(measure.dir_bytes(os.path.join(trainer, name))
               for name in (os.listdir(trainer) if os.path.isdir(trainer) else [])
               if name.startswith('model'))
  return {'artifacts': measure.dir_bytes(pipeline_root) - models, 'models': models}


def _parse_log(text: str) -> Dict[str, Any]:
  """Component seconds, eval accuracy and feature-cache calls from a run's log."""
  components = {name: {'state': state, 'seconds': float(seconds)}
                for name, state, seconds in COMPONENT_LINE.findall(text)}
  evaluation = EVAL_LINE.search(text)
  cache = [{'what': what, 'images': int(images), 'views': int(views),
            'seconds': float(seconds), 'images_per_second': float(rate)}
           for images, what, views, seconds, rate in CACHE_LINE.findall(text)]
  step = STEP_LINE.search(text)
  if step:
    # One Beam job embeds every split: each pass gets the job's overall rate.
    splits = STEP_SPLIT.findall(step.group(1))
    seconds = float(step.group(2))
    rate = sum(int(images) * int(views) for images, _, views in splits) / seconds
    cache += [{'what': STEP_PASSES[split], 'images': int(images), 'views': int(views),
               'seconds': seconds, 'images_per_second': round(rate, 1)}
              for images, split, views in splits]
  return {'components': components,
          'eval_accuracy': float(evaluation.group(1)) if evaluation else None,
          'eval_images': int(evaluation.group(2)) if evaluation else None,
          'feature_cache': cache}


def _component_peaks(output: str, samples: List[Dict[str, Any]]) -> Dict[str, int]:
  """Peak tree RSS (MB) while each component of the run executed (ML Metadata's
  execution times); none for a run that recorded no executions."""
  metadata = os.path.join(output, 'metadata.sqlite')
  if not os.path.exists(metadata):
    return {}
  peaks = {node: measure.peaks(samples, window[:2])
           for node, window in measure.component_windows(metadata).items()}
  return {node: peak['tree_total_mb'] for node, peak in peaks.items() if peak}


def _run(design: str, repo: str, sets: List[str], n: int, unlabeled: Optional[str],
         schema: str, input_bytes: int, args: argparse.Namespace) -> Dict[str, Any]:
  """One pipeline run of `design` (its code in `repo`, with `--set` `sets`),
  sampled and parsed."""
  name = f'{"-".join(design.split()[::2])}-{n}-{"with" if unlabeled else "none"}'
  output = os.path.join(args.work_dir, 'runs', name)
  log_path = _log_path(args, name)
  shutil.rmtree(output, ignore_errors=True)
  command = [sys.executable, '-m', 'pipeline', 'run',
             '--data', os.path.join(args.work_dir, f'photos-{n}'),
             *(['--unlabeled', unlabeled] if unlabeled else []),
             '--output', output, '--set', f'data.schema_file={schema}',
             *[arg for value in sets for arg in ('--set', value)]]
  quiet = measure.wait_until_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else {}
  print(f'[{datetime.datetime.now():%H:%M:%S}] {design}, N={n}, unlabeled pool: '
        f'{"yes" if unlabeled else "no"} (log {log_path})', flush=True)
  run = measure.run_sampled(command, log_path, int(args.min_free_gb * GB),
                            int(args.max_memory_gb * GB), cwd=repo, env=_env(repo))
  with open(log_path, errors='replace') as f:
    text = f.read()
  row = {
      'design': design, 'images': n, 'unlabeled_pool': bool(unlabeled),
      'command': ' '.join(command), 'cwd': repo, 'exit_code': run.code,
      'status': ('stopped' if run.sampler.stopped_for else
                 'ok' if run.code == 0 else f'exit {run.code}'),
      'stopped_for': run.sampler.stopped_for,
      'wall_seconds': round(run.seconds, 1),
      'other_processes_mean_cores': round(run.other_cpu_seconds / run.seconds, 2),
      **quiet,
      'input_bytes': input_bytes,
      **_parse_log(text),
      'memory_peaks': measure.peaks(run.sampler.samples),
      'memory_timeline_mb': measure.timeline(run.sampler.samples),
      'component_peaks_mb': _component_peaks(output, run.sampler.samples),
      **{f'{key}_bytes': value for key, value in
         _artifact_bytes(os.path.join(output, 'pipeline_root')).items()},
  }
  if run.code:
    row['log_tail'] = text.splitlines()[-20:]
  if not args.keep:
    shutil.rmtree(output, ignore_errors=True)
  return row


def _derive(rows: List[Dict[str, Any]], forward_rate: float) -> None:
  """Photos/second and the targets of each row (see the module docstring)."""
  for row in rows:
    seconds = {name: c['seconds'] for name, c in row['components'].items()}
    rates = {name: round(row['images'] / seconds[name], 1)
             for name in RATE_COMPONENTS if seconds.get(name)}
    if seconds.get('Evaluator') and row['eval_images']:
      rates['Evaluator'] = round(row['eval_images'] / seconds['Evaluator'], 1)
    row['images_per_second'] = rates
    labeled = next((c for c in row['feature_cache'] if c['what'] == 'labeled images'), None)
    # Every image the run must show the backbone: each labeled view, each
    # unlabeled image and the eval images for the Trainer's audit (every pass
    # of the feature cache), then the eval images again in the Evaluator.
    backbone_images = sum(c['images'] * c['views'] for c in row['feature_cache'])
    backbone_images += row['eval_images'] or 0
    reference = min((r for r in rows if r['design'] == row['design'] and
                     r['unlabeled_pool'] == row['unlabeled_pool'] and r['memory_peaks']),
                    key=lambda r: r['images'], default=None)
    tree_mb = row['memory_peaks'].get('tree_total_mb')
    targets = {
        'cache_over_forward': (round(labeled['images_per_second'] / forward_rate, 3)
                               if labeled else None),
        'backbone_only_seconds': round(backbone_images / forward_rate, 1),
        'components_seconds': round(sum(seconds.values()), 1),
        'artifacts_over_input': round(row['artifacts_bytes'] / row['input_bytes'], 2),
    }
    targets['components_over_backbone_only'] = (
        round(targets['components_seconds'] / targets['backbone_only_seconds'], 2)
        if labeled and row['eval_images'] else None)
    if tree_mb:
      targets['peak_tree_within_6gb'] = tree_mb / 1024 <= TARGETS['peak_tree_gb']
    if reference and tree_mb:
      bound = reference['memory_peaks']['tree_total_mb'] + row['input_bytes'] / measure.MB
      targets['peak_tree_bound_mb'] = round(bound)
      targets['peak_tree_bound_from_images'] = reference['images']
      targets['peak_tree_within_bound'] = tree_mb <= bound
    row['targets'] = targets


# --------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------

def _check(value: Optional[float], low: Optional[float] = None,
           high: Optional[float] = None) -> str:
  """`value`, with a tick when it meets its target and a cross when it does not."""
  if value is None:
    return '-'
  if low is None and high is None:
    return str(value)
  ok = (low is None or value >= low) and (high is None or value <= high)
  return f'{value} {"✓" if ok else "✗"}'


def _cells(row: Dict[str, Any]) -> List[Any]:
  """One row of the Markdown table."""
  seconds = {name: c['seconds'] for name, c in row['components'].items()}
  rates = row['images_per_second']
  component = lambda name: (f'{seconds[name]:.1f} ({rates.get(name, "-")})'
                            if name in seconds else '-')
  cache = {c['what']: c['images_per_second'] for c in row['feature_cache']}
  t = row['targets']
  mem = row['memory_peaks']
  tree_gb = round(mem['tree_total_mb'] / 1024, 2) if mem else None
  return [
      row['design'], row['images'], 'with' if row['unlabeled_pool'] else 'none',
      row['status'], row['wall_seconds'],
      *[component(name) for name in (*RATE_COMPONENTS, 'Evaluator')],
      f'{cache.get("labeled images", "-")} / {cache.get("unlabeled images", "-")}',
      _check(t['cache_over_forward'], low=TARGETS['cache_over_forward']
             if row['images'] >= TARGETS['cache_target_from_n'] else None),
      f'{t["components_seconds"]} / {t["backbone_only_seconds"]} = ' + _check(
          t['components_over_backbone_only'], high=TARGETS['components_over_backbone_only']),
      f'{mem.get("main_mb", "-")} / {mem.get("worker_max_mb") or "in-process"} / '
      f'{mem.get("tree_total_mb", "-")}',
      f'{_check(tree_gb, high=TARGETS["peak_tree_gb"])}; '
      f'{_check(t.get("peak_tree_bound_mb"), low=mem.get("tree_total_mb"))} '
      f'(N={t.get("peak_tree_bound_from_images", "-")})',
      f'{row["artifacts_bytes"] / 1e6:.1f} / {row["input_bytes"] / 1e6:.1f} = '
      f'{_check(t["artifacts_over_input"], high=TARGETS["artifacts_over_input"])}',
      '-' if row['eval_accuracy'] is None else row['eval_accuracy'],
      row['other_processes_mean_cores'],
  ]


def _markdown(report: Dict[str, Any]) -> str:
  forward = report['forward_pass']
  photos = '; '.join(f'{folder}: {s["files"]} files, {s["bytes"] / 1e6:.1f} MB, '
                     f'mean {s["mean_kb"]} KB' for folder, s in report['photos'].items())
  header = ('design', 'N', 'pool', 'status', 'wall s', 'ExampleGen s (img/s)',
            'Transform s (img/s)', 'BackboneFeatures s (img/s)', 'Trainer s (img/s)',
            'Evaluator s (img/s)',
            'cache img/s labeled / unlabeled', 'cache / forward',
            'components s / backbone-only s', 'peak RSS MB process / worker / tree',
            "peak tree GB (<= 6); bound MB (smallest N's peak + input)", 'artifacts / input MB',
            'eval accuracy', 'other processes (cores)')
  lines = [
      f'Measured {report["date"]} on {report["machine"]}. Current design: '
      f'{report["current"]}' + (f' with uncommitted changes to '
                                f'{", ".join(report["current_uncommitted"])}'
                                if report['current_uncommitted'] else '') +
      f'. Forward pass of {forward["backbone"]} at '
      f'{forward["image_size"]} px, batch {forward["batch_size"]}: '
      f'{forward["images_per_second"]} images/s (other processes used '
      f'{forward["other_processes_mean_cores"]} cores).', '', f'Photos: {photos}.', '',
      "Component seconds are from the run's summary, with photos/s (labeled photos / s; "
      "Evaluator: eval images / s). Cache: the Trainer's feature-cache rates (with "
      f"{BEAM_FEATURES}: BackboneFeatures' image views / s, start-up included); "
      'cache / forward: labeled rate / forward pass (target >= 0.85 at N >= 5000). '
      "Components s: all components' seconds, over the backbone-only seconds (labeled "
      'images x views + unlabeled + eval images twice, for the audit and the Evaluator, '
      'at the forward rate; target <= 2). '
      'Peak RSS: pipeline process / largest Beam worker / whole tree. Artifacts: '
      "pipeline_root without the models, over the input photos' bytes (target <= 2).",
      '', '| ' + ' | '.join(header) + ' |',
      '| ' + ' | '.join('---' if i in (0, 2, 3) else '---:' for i in range(len(header))) + ' |',
  ]
  lines += ['| ' + ' | '.join(str(cell) for cell in _cells(row)) + ' |'
            for row in report['results']]
  lines += ['', 'Peak tree RSS (MB) while each component ran:', '']
  lines += [f'- {row["design"]}, N={row["images"]}, pool '
            f'{"with" if row["unlabeled_pool"] else "none"}: ' +
            ', '.join(f'{node} {mb}' for node, mb in row.get('component_peaks_mb', {}).items())
            for row in report['results']]
  for row in report['results']:
    if row['status'] != 'ok':
      lines += ['', f'{row["design"]}, N={row["images"]}, pool '
                f'{"with" if row["unlabeled_pool"] else "none"}: {row["status"]}'
                f'{", " + row["stopped_for"] if row["stopped_for"] else ""}; last log lines:',
                '```', *row.get('log_tail', []), '```']
  return '\n'.join(lines) + '\n'


def _write_report(report: Dict[str, Any], path: str) -> str:
  _derive(report['results'], report['forward_pass']['images_per_second'])
  markdown = _markdown(report)
  measure.write_results(path, report, markdown)
  return markdown


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[1000, 5000, 20000],
                      help='numbers of labeled photos, multiples of 10')
  parser.add_argument('--pools', nargs='+', choices=('none', 'with'), default=['none', 'with'],
                      help='run each size without and/or with the unlabeled pool')
  parser.add_argument('--unlabeled-fraction', type=float, default=0.2,
                      help='unlabeled pool size, as a fraction of N')
  parser.add_argument('--beam-features-sizes', type=int, nargs='*', default=[1000, 5000],
                      help='sizes the current design also runs at with the backbone '
                      'pass as a Beam step (training.beam_features; none: not run)')
  parser.add_argument('--baseline-commit', default='51780ff',
                      help='the previous design, run from a git worktree of this commit')
  parser.add_argument('--baseline-sizes', type=int, nargs='*', default=[1000, 5000],
                      help='sizes the baseline runs at (none: no baseline)')
  parser.add_argument('--work-dir', default=DEFAULT_WORK_DIR,
                      help='photos (kept and reused), schemas, logs, run outputs, worktree')
  parser.add_argument('--keep', action='store_true', help='keep the runs\' output folders')
  parser.add_argument('--report', default=DEFAULT_REPORT,
                      help='JSON report; the Markdown table goes next to it (.md)')
  parser.add_argument('--max-memory-gb', type=float, default=20.0,
                      help='stop a run whose process tree uses more (0: no limit)')
  parser.add_argument('--min-free-gb', type=float, default=2.0,
                      help='stop a run when the machine has less memory available')
  parser.add_argument('--quiet-wait', type=float, default=900.0,
                      help='before each measurement, wait up to this many seconds '
                           'for other processes to go quiet (0: do not wait)')
  parser.add_argument('--quiet-cores', type=float, default=0.3,
                      help='"quiet": other processes use fewer cores than this')
  parser.add_argument('--forward-pass', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.forward_pass:
    forward_pass()
    return
  bad = [n for n in args.sizes + args.beam_features_sizes + args.baseline_sizes
         if n < CLASSES or n % CLASSES]
  if bad:
    parser.error(f'sizes {bad}: each must be a positive multiple of {CLASSES}')
  args.work_dir = os.path.abspath(args.work_dir)
  os.makedirs(args.work_dir, exist_ok=True)
  baseline = (_baseline_worktree(args.work_dir, args.baseline_commit)
              if args.baseline_sizes else None)

  head = _git('rev-parse', '--short', 'HEAD')
  report = {
      'date': datetime.date.today().isoformat(),
      'machine': f'{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / GB:.0f} '
                 f'GiB RAM, {platform.platform()}',
      'command': ' '.join(sys.argv),
      'current': head,
      # The current design runs from the working tree, uncommitted edits included.
      'current_uncommitted': [line.split()[-1] for line in _git(
          'status', '--porcelain', '--untracked-files=no', '--', '.',
          ':(exclude)bench').splitlines()],
      'baseline_commit': args.baseline_commit,
      'targets': TARGETS,
      'stop_when': {'tree_above_gb': args.max_memory_gb or None,
                    'machine_available_below_gb': args.min_free_gb},
      'memory_method': ('RSS of the pipeline process and of each descendant, sampled '
                        f'with psutil every {measure.SAMPLE_SECONDS} s from this process'),
      'photos': {},
      'results': [],
  }
  sizes = sorted(set(args.sizes) | set(args.beam_features_sizes) | set(args.baseline_sizes))
  for n in sizes:
    folder = os.path.join(args.work_dir, f'photos-{n}')
    _write_photos(folder, n, True)
    report['photos'][os.path.basename(folder)] = _folder_stats(folder)
    if 'with' in args.pools:
      pool = folder + '-unlabeled'
      _write_photos(pool, round(n * args.unlabeled_fraction), False)
      report['photos'][os.path.basename(pool)] = _folder_stats(pool)
  report['forward_pass'] = _measure_forward_pass(args)

  designs = [(f'current {head}', REPO_ROOT, [], args.sizes),
             (f'current {head} + {BEAM_FEATURES}', REPO_ROOT, [BEAM_FEATURES],
              args.beam_features_sizes),
             (f'baseline {args.baseline_commit}', baseline, [], args.baseline_sizes)]
  for n in sizes:
    folder = os.path.join(args.work_dir, f'photos-{n}')
    schema = os.path.join(args.work_dir, f'schema-{n}.pbtxt')
    child = subprocess.run([sys.executable, '-m', 'pipeline', 'schema', '--data', folder],
                           capture_output=True, text=True, cwd=REPO_ROOT, env=_env(REPO_ROOT))
    if child.returncode:
      sys.exit(f'error: python -m pipeline schema failed:\n{child.stderr[-4000:]}')
    with open(schema, 'w') as f:
      f.write(child.stdout)
    for design, repo, sets, design_sizes in designs:
      for pool in (args.pools if n in design_sizes else []):
        unlabeled = folder + '-unlabeled' if pool == 'with' else None
        input_bytes = report['photos'][os.path.basename(folder)]['bytes'] + (
            report['photos'][os.path.basename(unlabeled)]['bytes'] if unlabeled else 0)
        row = _run(design, repo, sets, n, unlabeled, schema, input_bytes, args)
        report['results'].append(row)
        _write_report(report, args.report)   # partial results survive an interruption
        print(f'    {row["status"]} in {row["wall_seconds"]} s, peak tree RSS '
              f'{row["memory_peaks"].get("tree_total_mb")} MB, eval accuracy '
              f'{row["eval_accuracy"]}', flush=True)
  print(_write_report(report, args.report))
  print(f'Wrote {args.report} and {os.path.splitext(args.report)[0]}.md')


if __name__ == '__main__':
  main()
