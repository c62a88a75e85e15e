"""The label-efficiency benchmark's table (Markdown) and plot (PNG)."""

from typing import Any, Callable, Dict, List

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


def targets(summary: Dict[str, Any], default_key: Dict[str, str]) -> List[str]:
  """The issue's targets, each with its measured verdict; (c) and (d) are the
  pipeline's default backbone's rows."""
  names, ks, _ = _axes(summary)
  c_key, d_key = default_key['pipeline'], default_key['pipeline_unlabeled']
  lines = []

  def mean(name, k, method):
    entry = summary.get(f'{name}/k={k}/{method}')
    return entry['accuracy_mean'] if entry else None

  def verdict(value, goal):
    return f'{"met" if value >= goal else "MISSED"} ({value - goal:+.3f})'

  for name in names:
    for k in ks:
      c, b, b_plus, d = (mean(name, k, m) for m in (c_key, 'linear_probe',
                                                     'linear_probe_plus', d_key))
      if None not in (c, b, b_plus):
        goal = max(b, b_plus) + 0.02
        lines.append(f'- {name}, k={k}: (c) {c:.3f} vs max((b), (b+)) + 0.02 = '
                     f'{goal:.3f}: {verdict(c, goal)}')
      if None not in (c, d):
        lines.append(f'- {name}, k={k}: (d) {d:.3f} vs (c) − 0.005 = {c - 0.005:.3f}: '
                     f'{verdict(d, c - 0.005)}')
  for k_d, k_b in ((10, 25), (5, 10)):
    d, b = mean('fashion_mnist', k_d, d_key), mean('fashion_mnist', k_b, 'linear_probe')
    if None not in (d, b):
      lines.append(f'- fashion_mnist: (d) at k={k_d} {d:.3f} vs (b) at k={k_b} {b:.3f}: '
                   f'{verdict(d, b)}')
  return lines


def gate_gaps(summary: Dict[str, Any], default_key: Dict[str, str]) -> List[str]:
  """Mean eval − test accuracy of the default head, C by cross-validation on the
  train split against C chosen on the eval split, per data set and k."""
  names, ks, _ = _axes(summary)
  lines = []
  for name in names:
    for k in ks:
      honest = summary.get(f'{name}/k={k}/{default_key["pipeline"]}')
      leaky = summary.get(f'{name}/k={k}/pipeline_eval_selected')
      if honest and leaky and 'eval_gap_mean' in honest:
        lines.append(f'| {name} | {k} | {leaky["eval_gap_mean"]:+.3f} | '
                     f'{honest["eval_gap_mean"]:+.3f} |')
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


def table(report: Dict[str, Any], summary: Dict[str, Any],
          label: Callable[[str], str]) -> str:
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
      lines.append(f'| {label(method)} | ' + ' | '.join(
          _cell(summary, f'{name}/k={k}/{method}') for k in ks) + f' | {seconds} |')
    lines.append('')
  lines += ['## Targets', ''] + targets(summary, report['default_key']) + ['']
  gaps = gate_gaps(summary, report['default_key'])
  if gaps:
    lines += ['## The gate: eval − test accuracy, mean over seeds', '',
              'Positive: the eval split flatters the model. Eval split: max(2, k/4) '
              'images per class, apart from the labeled and unlabeled images.', '',
              '| data set | k | C chosen on eval (leaky) | C by cross-validation on train |',
              '|---|---:|---:|---:|'] + gaps + ['']
  speed = speedups(summary)
  if speed:
    lines += ['## Feature cache: seconds per epoch of the seed recipe', '',
              '| data set | k | backbone every epoch | on the cache | speed-up | '
              'accuracy, cache − backbone |', '|---|---:|---:|---:|---:|---:|'] + speed + ['']
  return '\n'.join(lines)


def plot(summary: Dict[str, Any], label: Callable[[str], str], path: str) -> None:
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
      axes.plot(x, y, 'o-', label=label(method))
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
