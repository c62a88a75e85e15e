"""The report's figures, drawn with matplotlib (Agg, no display) into PNG bytes.

Each function takes plain values and returns one PNG; none keeps global
pyplot state, so plotting is safe inside a long-running orchestrator process.
"""

import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib
matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np
from PIL import Image

_TRAIN, _EVAL, _BAD, _GOOD, _MUTED = '#1f77b4', '#ff7f0e', '#d62728', '#2ca02c', '#7f7f7f'
_DPI = 100
# Grad-CAM overlays: the colormap of the Grad-CAM paper (blue cold, red hot),
# and how much of it covers the image.
_HEATMAP_COLORMAP, _HEATMAP_ALPHA = 'jet', 0.45


def _png(figure: Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=_DPI, bbox_inches='tight')
  return buffer.getvalue()


def _class_axis(axes, names: Sequence[str], axis: str = 'x') -> None:
  ticks = np.arange(len(names))
  rotation = 30 if max(map(len, names), default=0) * len(names) > 60 else 0
  if axis == 'x':
    axes.set_xticks(ticks, names, rotation=rotation,
                    ha='right' if rotation else 'center')
  else:
    axes.set_yticks(ticks, names)


def learning_curve(curve: Dict[str, Any], next_labels_per_class: Optional[float]) -> bytes:
  """Held-out accuracy against labels per class (mean ± std over the draws),
  with the log-linear fit through it carried on to the label queue's next batch."""
  points = curve['points']
  sizes = np.array([point['labels_per_class'] for point in points])
  accuracy = np.array([point['accuracy'] for point in points])
  spread = np.array([point['accuracy_std'] for point in points])
  figure = Figure(figsize=(6, 3.6))
  axes = figure.subplots()
  axes.fill_between(sizes, accuracy - spread, accuracy + spread, color=_TRAIN, alpha=0.2)
  axes.plot(sizes, accuracy, 'o-', color=_TRAIN, label='held-out train images')
  fit = curve.get('fit')
  if fit:
    end = max(sizes.max(), next_labels_per_class or 0)
    line = np.geomspace(sizes.min(), end, 50)
    axes.plot(line, np.minimum(1, fit['intercept'] + fit['slope'] * np.log(line)), '--',
              color=_MUTED, label='log-linear fit')
  if next_labels_per_class:
    axes.axvline(next_labels_per_class, color=_EVAL, linestyle=':',
                 label="after the label queue's next batch")
  axes.set_xscale('log')
  axes.set_xlabel('labeled images per class')
  axes.set_ylabel('accuracy')
  axes.set_ylim(0, 1.02)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8, loc='lower right')
  return _png(figure)


def confusion_matrix(matrix: List[List[int]], class_names: List[str]) -> bytes:
  """Heatmap of counts, true class by row; the diagonal is what was right."""
  counts = np.array(matrix, dtype=int)
  size = max(4.0, 0.55 * len(class_names) + 2.5)
  figure = Figure(figsize=(size + 1, size))
  axes = figure.subplots()
  image = axes.imshow(counts, cmap='Blues', vmin=0)
  colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
  colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  threshold = counts.max() / 2 if counts.size else 0
  for (row, column), count in np.ndenumerate(counts):
    axes.text(column, row, str(count), ha='center', va='center', fontsize=9,
              color='white' if count > threshold else 'black',
              fontweight='bold' if row == column else 'normal')
  _class_axis(axes, class_names, 'x')
  _class_axis(axes, class_names, 'y')
  axes.set_xlabel('predicted class')
  axes.set_ylabel('true class')
  axes.set_title(f'Confusion matrix ({counts.sum()} eval images)')
  return _png(figure)


def per_class_metrics(per_class: Dict[str, Dict[str, float]],
                      reference: Optional[float] = None) -> bytes:
  """Precision and recall bars per class, with the accuracy bound as a line."""
  names = list(per_class)
  figure = Figure(figsize=(max(6.0, 0.8 * len(names) + 2), 3.6))
  axes = figure.subplots()
  x = np.arange(len(names))
  for offset, metric, color in ((-0.2, 'precision', _TRAIN), (0.2, 'recall', _EVAL)):
    values = [per_class[name].get(metric, np.nan) for name in names]
    bars = axes.bar(x + offset, values, 0.4, label=metric, color=color)
    axes.bar_label(bars, fmt='%.2f', fontsize=7, padding=1)
  if reference is not None:
    axes.axhline(reference, color=_BAD, linestyle='--', linewidth=1,
                 label=f'min accuracy {reference:.2f}')
  _class_axis(axes, names)
  axes.set_ylim(0, 1.3)
  axes.set_yticks(np.linspace(0, 1, 6))
  axes.set_title('Per-class precision and recall (eval split)')
  axes.legend(fontsize=8, loc='upper center', ncol=3)
  axes.grid(axis='y', alpha=0.3)
  return _png(figure)


def split_counts(counts: Dict[str, Dict[str, int]]) -> bytes:
  """Images per class, one bar per split, in the order of `counts`."""
  splits = list(counts)
  names = list(dict.fromkeys(name for split in counts.values() for name in split))
  figure = Figure(figsize=(max(6.0, 0.8 * len(names) + 2), 3.4))
  axes = figure.subplots()
  x = np.arange(len(names))
  width = 0.8 / max(1, len(splits))
  for i, split in enumerate(splits):
    bars = axes.bar(x + (i - (len(splits) - 1) / 2) * width,
                    [counts[split].get(name, 0) for name in names], width, label=split)
    axes.bar_label(bars, fontsize=7, padding=1)
  _class_axis(axes, names)
  axes.set_ylabel('images')
  axes.set_title('Images per class and split')
  axes.set_ylim(0, axes.get_ylim()[1] * 1.2)
  axes.legend(fontsize=8, loc='upper center', ncol=len(splits))
  axes.grid(axis='y', alpha=0.3)
  return _png(figure)


def accuracy_gate(accuracy: float, interval: Optional[Tuple[float, float]],
                  min_accuracy: float, regression_bound: Optional[float],
                  passed: bool) -> bytes:
  """Accuracy (with its 95% interval) against the gate's bounds, on [0, 1]."""
  figure = Figure(figsize=(8, 1.7))
  axes = figure.subplots()
  color = _GOOD if passed else _BAD
  axes.barh([0], [accuracy], height=0.5, color=color, alpha=0.8)
  if interval:
    axes.errorbar([accuracy], [0], xerr=[[max(0.0, accuracy - interval[0])],
                                         [max(0.0, interval[1] - accuracy)]],
                  fmt='none', ecolor='black', capsize=6, label='95% interval')
  axes.axvline(min_accuracy, color='black', linestyle='--',
               label=f'min accuracy {min_accuracy:.3f}')
  if regression_bound is not None:
    axes.axvline(regression_bound, color=_MUTED, linestyle=':', linewidth=2,
                 label=f'baseline - max drop {regression_bound:.3f}')
  axes.text(accuracy, 0.33, f' {accuracy:.3f}', va='bottom', fontweight='bold')
  axes.set_xlim(0, 1)
  axes.set_ylim(-0.5, 0.8)
  axes.set_yticks([])
  axes.set_xlabel('eval accuracy')
  axes.legend(fontsize=8, loc='center left', bbox_to_anchor=(1.01, 0.5))
  return _png(figure)


def reliability(curves: Dict[str, Sequence[Any]]) -> bytes:
  """Reliability diagram: accuracy against mean confidence per confidence bin
  (calibration.ReliabilityBin lists, one per label); on the diagonal a model
  is right as often as it says. Marker area follows the bin's image count."""
  figure = Figure(figsize=(4.6, 4.2))
  axes = figure.subplots()
  axes.plot([0, 1], [0, 1], color=_MUTED, linestyle='--', label='calibrated')
  for (label, bins), color in zip(curves.items(), (_EVAL, _TRAIN)):
    filled = [b for b in bins if b.images]
    axes.plot([b.confidence for b in filled], [b.accuracy for b in filled], '-',
              color=color, alpha=0.6)
    axes.scatter([b.confidence for b in filled], [b.accuracy for b in filled],
                 s=[12 + 200 * b.images / max(sum(x.images for x in filled), 1)
                    for b in filled], color=color, label=label, zorder=3)
  axes.set_xlim(0, 1.02)
  axes.set_ylim(0, 1.02)
  axes.set_xlabel('confidence (top probability)')
  axes.set_ylabel('accuracy')
  axes.legend(fontsize=8, loc='upper left')
  axes.grid(alpha=0.3)
  return _png(figure)


def thumbnail(encoded: bytes, size: int = 160) -> np.ndarray:
  """An RGB thumbnail of encoded image bytes (first frame of a GIF)."""
  with Image.open(io.BytesIO(encoded)) as image:
    image = image.convert('RGB')
    image.thumbnail((size, size))
    return np.asarray(image)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray) -> bytes:
  """A PNG of `image` (uint8 RGB [H, W, 3]) at its own size under its Grad-CAM
  `heatmap` ([h, w] in [0, 1], upsampled bilinearly), colour-mapped and
  alpha-blended."""
  height, width = image.shape[:2]
  upsampled = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode='F')
                         .resize((width, height), Image.BILINEAR))
  colours = matplotlib.colormaps[_HEATMAP_COLORMAP](np.clip(upsampled, 0, 1))[..., :3]
  blended = (1 - _HEATMAP_ALPHA) * image + _HEATMAP_ALPHA * 255 * colours
  buffer = io.BytesIO()
  Image.fromarray(np.round(blended).astype(np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


def gallery(items: List[Tuple[bytes, str]], columns: int = 4,
            caption_color: str = _BAD) -> bytes:
  """A grid of images with a caption under each (red: they show mistakes)."""
  rows = max(1, -(-len(items) // columns))
  figure = Figure(figsize=(2.4 * columns, 2.7 * rows))
  grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
  for axes in grid:
    axes.axis('off')
  for axes, (encoded, caption) in zip(grid, items):
    axes.imshow(thumbnail(encoded), interpolation='nearest')
    axes.set_title(caption, fontsize=8, color=caption_color)
  figure.tight_layout()
  return _png(figure)
