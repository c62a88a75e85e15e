"""The label-efficiency benchmark's table (Markdown) and plot (PNG)."""

from typing import Any, Dict, List

import matplotlib
matplotlib.use('Agg')
from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def _cell(summary: Dict[str, Any], key: str) -> str:
  entry = summary.get(key)
  if not entry:
    return 'n/a'
  return f"{entry['accuracy_mean']:.3f} ± {entry['accuracy_std']:.3f}"


def _axes(summary: Dict[str, Any]):
  """Data sets, ks and methods present, in order of first appearance."""
  names, ks, methods = [], set(), []
  for key in summary:
    name, k, method = key.split('/')
    if name not in names:
      names.append(name)
    ks.add(int(k[2:]))
    if method not in methods:
      methods.append(method)
  return names, sorted(ks), methods


def targets(summary: Dict[str, Any]) -> List[str]:
  """The issue's targets, each with its measured verdict."""
  names, ks, _ = _axes(summary)
  lines = []

  def mean(name, k, method):
    entry = summary.get(f'{name}/k={k}/{method}')
    return entry['accuracy_mean'] if entry else None

  for name in names:
    for k in ks:
      c, a, b = (mean(name, k, m) for m in ('pipeline', 'seed_recipe', 'linear_probe'))
      if None not in (c, a, b):
        best = max(a, b)
        lines.append(f'- {name}, k={k}: (c) {c:.3f} vs max((a), (b)) {best:.3f}: '
                     f'{"met" if c >= best else "MISSED"} ({c - best:+.3f})')
  for k in ks:
    d, b = mean('fashion_mnist', k, 'pipeline_unlabeled'), mean('fashion_mnist', k,
                                                                 'linear_probe')
    if k <= 10 and None not in (d, b):
      lines.append(f'- fashion_mnist, k={k}: (d) {d:.3f} vs (b) + 0.05 = {b + 0.05:.3f}: '
                   f'{"met" if d >= b + 0.05 else "MISSED"} ({d - b - 0.05:+.3f})')
  return lines


def speedups(summary: Dict[str, Any]) -> List[str]:
  """Seconds per epoch of the seed recipe, backbone every epoch vs cache."""
  names, ks, _ = _axes(summary)
  lines = []
  for name in names:
    for k in ks:
      full = summary.get(f'{name}/k={k}/seed_recipe')
      cached = summary.get(f'{name}/k={k}/seed_recipe_cached')
      if full and cached and full['epoch_seconds_mean'] and cached['epoch_seconds_mean']:
        lines.append(
            f'| {name} | {k} | {full["epoch_seconds_mean"]:.3f} | '
            f'{cached["epoch_seconds_mean"]:.4f} | '
            f'{full["epoch_seconds_mean"] / cached["epoch_seconds_mean"]:.0f}× | '
            f'{cached["accuracy_mean"] - full["accuracy_mean"]:+.3f} |')
  return lines


def table(report: Dict[str, Any], summary: Dict[str, Any], labels: Dict[str, str]) -> str:
  names, ks, methods = _axes(summary)
  lines = ['# Label efficiency: measured results', '',
           'Written by `bench/label_efficiency.py` (`make bench-labels`); see '
           '[label_efficiency.md](label_efficiency.md) for the methods. Test accuracy, '
           f'mean ± std over {len(report["args"]["seeds"])} seeds; whole run '
           f'{report["seconds"] / 60:.1f} min on this machine.', '']
  for name in names:
    rows = [row for row in report['rows'] if row['dataset'] == name]
    lines += [f'## {name} ({rows[0]["test_images"]} test images)', '',
              '| method | ' + ' | '.join(f'k={k}' for k in ks) + ' | train s (k=max) |',
              '|---|' + '---:|' * (len(ks) + 1)]
    for method in methods:
      last = summary.get(f'{name}/k={ks[-1]}/{method}') or next(
          (summary[f'{name}/k={k}/{method}'] for k in reversed(ks)
           if f'{name}/k={k}/{method}' in summary), None)
      seconds = f'{last["train_seconds_mean"]:.1f}' if last else 'n/a'
      lines.append(f'| {labels[method]} | ' + ' | '.join(
          _cell(summary, f'{name}/k={k}/{method}') for k in ks) + f' | {seconds} |')
    lines.append('')
  lines += ['## Targets', ''] + targets(summary) + ['']
  speed = speedups(summary)
  if speed:
    lines += ['## Feature cache: seconds per epoch of the seed recipe', '',
              '| data set | k | backbone every epoch | on the cache | speed-up | '
              'accuracy, cache − backbone |', '|---|---:|---:|---:|---:|---:|'] + speed + ['']
  return '\n'.join(lines)


def plot(summary: Dict[str, Any], labels: Dict[str, str], path: str) -> None:
  """Accuracy vs labels per class, a panel per data set, a line per method."""
  names, ks, methods = _axes(summary)
  figure = Figure(figsize=(5 * len(names), 4))
  for axes, name in zip(np.atleast_1d(figure.subplots(1, len(names))), names):
    for method in methods:
      points = [(k, summary[f'{name}/k={k}/{method}']) for k in ks
                if f'{name}/k={k}/{method}' in summary]
      if not points:
        continue
      x = [k for k, _ in points]
      y = np.array([entry['accuracy_mean'] for _, entry in points])
      error = np.array([entry['accuracy_std'] for _, entry in points])
      axes.plot(x, y, 'o-', label=labels[method])
      axes.fill_between(x, y - error, y + error, alpha=0.15)
    axes.set_xscale('log')
    axes.set_xticks(ks)
    axes.set_xticklabels([str(k) for k in ks])
    axes.set_title(name)
    axes.set_xlabel('labeled images per class')
    axes.set_ylabel('test accuracy')
    axes.grid(alpha=0.3)
  figure.axes[0].legend(fontsize=7, loc='lower right')
  figure.tight_layout()
  figure.savefig(path, dpi=110)
