"""The report's content: its sections, built from the gathered facts.

Figures are drawn here (through `plots`) so each sits next to the text and
tables that explain it; rendering to HTML or Markdown is `render`'s job.
"""

import json
from typing import Any, Dict, List, Optional, Tuple

from models import image_codec
from models.trainer import calibration
from models.trainer import data_quality
from models.trainer import learning_curve as learning_curve_lib
from pipeline.report import facts as facts_lib
from pipeline.report import model_card, plots, scoring
from pipeline.report.document import (Banner, Bullets, Code, Figure, Paragraph,
                                      Section, Table, percent)

# Quarantined files listed one by one; more are counted.
MAX_QUARANTINE_ROWS = 100

_STATUS = {True: ('PASS', 'pass'), False: ('FAIL', 'fail'), None: ('not applied', 'skip')}


def title(facts: facts_lib.Facts) -> str:
  return f'{facts.config["pipeline"]["name"]}: run {facts.summary.run_id}'


def interval_text(facts: facts_lib.Facts) -> str:
  if not facts.accuracy_interval:
    return ''
  low, high = facts.accuracy_interval
  return f'95% interval {low:.1%} to {high:.1%}'


def headline(facts: facts_lib.Facts) -> Banner:
  """The decision, the pushed version, and what failed when nothing was pushed."""
  summary, evaluation = facts.summary, facts.evaluation
  accuracy = evaluation.get('accuracy')
  measured = (f'Eval accuracy {percent(accuracy)} on {evaluation.get("example_count")} '
              f'images ({interval_text(facts)})' if accuracy is not None else '')
  if facts.decision == facts_lib.BLESSED:
    pushed = (f'pushed as version {summary.pushed_version} to {summary.pushed_to}'
              if summary.pushed_version is not None else 'but no push was recorded')
    return Banner('good', f'BLESSED: {pushed}', [measured])
  if facts.decision == facts_lib.NOT_BLESSED:
    failed = [f'Failed: {check.rule}; {check.detail}'
              for check in facts.checks if check.passed is False]
    failed += [f'Evaluator: {message}' for message in evaluation.get('failures', [])
               if message.strip()]
    return Banner('bad', 'NOT BLESSED: nothing was pushed', [measured, *failed])
  return Banner('neutral', 'NOT EVALUATED: the run did not reach the Evaluator',
                [f'{c.node_id}: {c.state}' for c in summary.components
                 if c.state not in ('COMPLETE', 'CACHED')] +
                [f'Data gate: {problem}' for problem in summary.data_gate_problems])


def overview(facts: facts_lib.Facts) -> Section:
  summary = facts.summary
  rows = [
      ['Pipeline run', summary.run_id],
      ['Started', facts.started],
      ['Decision', facts.decision],
      ['Registry version', str(summary.pushed_version) if summary.pushed_version
       is not None else 'none'],
      ['Candidate model', summary.model_uri or 'unknown'],
      ['Baseline model', _baseline_text(facts)],
  ]
  return Section('Summary', 'summary', [headline(facts), Table(['', ''], rows)])


def _baseline_text(facts: facts_lib.Facts) -> str:
  if not facts.summary.baseline_model_uri:
    return 'none (no model blessed before: no regression check)'
  version = (f'registry version {facts.baseline_version}, '
             if facts.baseline_version is not None else '')
  return f'{version}{facts.summary.baseline_model_uri}'


def evaluation_section(facts: facts_lib.Facts) -> Section:
  evaluation = facts.evaluation
  accuracy = evaluation.get('accuracy')
  if accuracy is None:
    return Section('Evaluation', 'evaluation',
                   [Paragraph('The Evaluator did not run, or wrote no metrics.')])
  thresholds = facts.config['evaluation']
  baseline = evaluation.get('baseline_accuracy')
  regression_bound = (baseline - thresholds['max_accuracy_drop']
                      if baseline is not None else None)
  blocks = [
      Figure('accuracy_gate', plots.accuracy_gate(
          accuracy, facts.accuracy_interval, thresholds['min_accuracy'],
          regression_bound, facts.decision == facts_lib.BLESSED),
             'Eval accuracy with its 95% interval against the blessing thresholds'),
      Paragraph(f'{percent(accuracy)} of {evaluation.get("example_count")} eval images '
                f'right ({interval_text(facts)}, Wilson); baseline '
                f'{percent(baseline) if baseline is not None else "none"}.',
                lead='Accuracy.'),
      Table(['Rule', 'Result', 'Detail'],
            [[check.rule, _STATUS[check.passed][0], check.detail] for check in facts.checks],
            [_STATUS[check.passed][1] for check in facts.checks]),
  ]
  messages = [message for message in evaluation.get('failures', []) if message.strip()]
  if messages:
    blocks.append(Paragraph('', lead='The Evaluator reported:'))
    blocks.append(Bullets(messages))
  return Section('Evaluation and the quality gate', 'evaluation', blocks)


def data_section(facts: facts_lib.Facts) -> Section:
  summary, counts = facts.summary, facts.split_counts
  blocks = [Paragraph(f'{facts.config["data"]["path"]}', lead='Images from'),
            Paragraph(summary.data_fingerprint or 'unknown', lead='Data fingerprint:')]
  if counts:
    splits = list(counts)
    names = list(dict.fromkeys(name for split in counts.values() for name in split))
    rows = [[name, *[str(counts[split].get(name, 0)) for split in splits]] for name in names]
    rows.append(['all', *[str(sum(counts[split].values())) for split in splits]])
    blocks += [
        Figure('images_per_class', plots.split_counts(counts),
               'Images per class and split'),
        Table(['Class', *splits], rows),
        Paragraph(f'Counted from the {facts.counts_source}.'),
    ]
  if facts.unlabeled_count is not None:
    blocks.append(Paragraph(f'{facts.unlabeled_count} images without labels '
                            '(data.unlabeled_path), never evaluated.', lead='Unlabeled.'))
  blocks.append(Paragraph(
      f'{summary.quarantined} file(s) were not ingested' +
      (f'; the list is in {summary.quarantine_report}.' if summary.quarantined else '.'),
      lead='Quarantine.'))
  if facts.quarantine:
    shown = facts.quarantine[:MAX_QUARANTINE_ROWS]
    blocks.append(Table(['File', 'Reason'], [[q.get('path', ''), q.get('reason', '')]
                                            for q in shown]))
    if len(facts.quarantine) > len(shown):
      blocks.append(Paragraph(f'... and {len(facts.quarantine) - len(shown)} more.'))
  return Section('Data', 'data', blocks)


def data_quality_section(facts: facts_lib.Facts) -> Optional[Section]:
  """The Trainer's audit: suspect labels, near-duplicates, outliers, each
  with thumbnails of the top of its list (docs/data_quality.md)."""
  audit = facts.data_quality
  if audit is None:
    return None
  title = 'Data quality: labels to check, near-duplicates, outliers'
  if 'skipped' in audit.summary:
    return Section(title, 'data-quality', [Paragraph(
        f'Not audited: {audit.summary["skipped"]}.')])
  summary, images = audit.summary, audit.images
  pairs = summary['near_duplicates']
  blocks = [Paragraph(
      f'{data_quality.describe(summary)}. Found on the frozen backbone\'s features, '
      'before the head was fitted; nothing was changed in the data. Full lists: '
      f'{audit.directory}.', lead='The audit.')]
  if audit.suspects:
    blocks += [
        Paragraph('Confident learning on out-of-sample probabilities lists these as most '
                  'likely filed under the wrong class. Move each file that is wrong into '
                  'its class folder and rerun.', lead='Labels to check.'),
        Figure('suspect_labels', plots.gallery(
            [(images[row['image_id']], f'filed: {row["given"]}\nmodel: {row["suggested"]}')
             for row in audit.suspects if row['image_id'] in images]),
            'Most likely wrong labels'),
        Table(['#', 'File', 'Split', 'Filed as', 'Model says', 'Score'],
              [[row['rank'], row['source_path'], row['split'], row['given'],
                row['suggested'], row['score']] for row in audit.suspects])]
  if audit.duplicates:
    blocks += [
        Paragraph(f'{pairs[data_quality.LEAKAGE]} pair(s) across train and eval (leakage: '
                  'the gate\'s accuracy is optimistic), '
                  f'{pairs[data_quality.CONFLICT]} under two labels (a conflict; '
                  'data_quality.cross_class_duplicates=stop fails the run on them), '
                  f'{pairs[data_quality.DUPLICATE]} within a class and split: at cosine '
                  f'similarity {summary["near_duplicate_similarity"]} or more, or each '
                  "the other's nearest image by a margin of "
                  f'{summary["near_duplicate_margin"]} or more.',
                  lead='Near-duplicates.'),
        Figure('near_duplicates', plots.gallery(
            [(images[row[f'image_id_{side}']],
              f'{row["kind"]} {row["similarity"]}\n{row[f"split_{side}"]}: '
              f'{row[f"label_{side}"]}')
             for row in audit.duplicates for side in 'ab'
             if row[f'image_id_{side}'] in images]), 'Near-duplicate pairs, side by side'),
        Table(['Kind', 'Similarity', 'File A', 'Split, label A', 'File B', 'Split, label B'],
              [[row['kind'], row['similarity'], row['source_path_a'],
                f'{row["split_a"]}, {row["label_a"]}', row['source_path_b'],
                f'{row["split_b"]}, {row["label_b"]}'] for row in audit.duplicates])]
  if audit.outliers:
    blocks += [
        Paragraph('Images far from all other labeled images (mean distance to their '
                  f'{data_quality.NEIGHBOURS} nearest above {summary["outlier_threshold"]:.3f}): '
                  'a picture of something else, a blank scan.', lead='Outliers.'),
        Figure('outliers', plots.gallery(
            [(images[row['image_id']], f'{row["label"]}\nscore {row["score"]}')
             for row in audit.outliers if row['image_id'] in images]), 'Outliers'),
        Table(['#', 'File', 'Split', 'Label', 'Score'],
              [[row['rank'], row['source_path'], row['split'], row['label'], row['score']]
               for row in audit.outliers])]
  return Section(title, 'data-quality', blocks)


def training_section(facts: facts_lib.Facts) -> Section:
  history = facts.history
  head = (history or {}).get('head')
  if not head:
    return Section('Training', 'training', [Paragraph('No training history was found.')])
  grid = head['regularization']
  chosen = (f'C = {grid["chosen"]:g}, chosen by {head["cv_folds"]}-fold cross-validation '
            f'({head["cv_repeats"]} shuffles) on the train split' if head['cv_folds'] else
            f'C = {grid["chosen"]:g} (a class has one labeled image: nothing to '
            'cross-validate on)')
  blocks = [Paragraph(
      f'{history.get("train_images", "?")} training images. The head is '
      f'{head["method"]}, {chosen}; the eval split was not used for any choice, so '
      'the evaluation above measures the model on images nothing was tuned on.')]
  if grid['cv_accuracy']:
    blocks.append(Table(['C', 'Cross-validated accuracy'], [
        [f'{c:g}' + (' (chosen)' if c == grid['chosen'] else ''), percent(accuracy)]
        for c, accuracy in zip(grid['grid'], grid['cv_accuracy'])]))
  unlabeled = head.get('unlabeled')
  if unlabeled:
    blocks.append(Paragraph(
        f'{unlabeled["images"]} unlabeled images: {unlabeled["reason"]}' +
        (f'; {unlabeled["pseudo_labels"]} pseudo-labels in the final head.'
         if unlabeled['used'] else '.'), lead='Semi-supervised.'))
  fine_tune = history.get('fine_tune')
  if fine_tune:
    blocks.append(Paragraph(
        f'{len(fine_tune.get("loss", []))} epoch(s) in '
        f'{sum(fine_tune.get("seconds", [])):.1f} s, last train accuracy '
        f'{_last(fine_tune, "accuracy")}.', lead='Fine-tuning.'))
  return Section('Training', 'training', blocks)


def more_labels_section(facts: facts_lib.Facts) -> Optional[Section]:
  """What more labels would buy: the Trainer's learning curve on the train split."""
  curve = ((facts.history or {}).get('head') or {}).get('learning_curve')
  if not curve or not curve.get('points'):
    return None
  queue = facts.config['labeling']['queue_size']
  current = curve['train_labels_per_class']
  next_labels = current + queue / max(1, len(facts.class_names))
  blocks = [Figure('learning_curve', plots.learning_curve(curve, next_labels),
                   'Accuracy against labeled images per class')]
  text = (f'Each point is a head fitted like the final one on part of the train split '
          f'and scored on the rest ({curve["repeats"]} random draws, or the '
          'cross-validation folds for the largest).')
  if curve.get('fit'):
    gain = (learning_curve_lib.expected_accuracy(curve, next_labels) -
            learning_curve_lib.expected_accuracy(curve, current))
    text += (f' The trend line puts the next {queue} labeled images (about '
             f'{queue / max(1, len(facts.class_names)):.1f} per class, as the label queue '
             f'proposes) at {gain * 100:+.1f} accuracy points: an extrapolation, not a '
             'promise.')
  blocks.append(Paragraph(text))
  first, last = curve['points'][0], curve['points'][-1]
  rows = [[name, percent(low), percent(high)] for name, low, high in zip(
      facts.class_names, first['class_recall'], last['class_recall'])]
  blocks.append(Table(['Class', f'Recall at {first["labels_per_class"]:.1f} labels/class',
                       f'at {last["labels_per_class"]:.1f}'], rows))
  return Section('More labels', 'more-labels', blocks)


def _last(metrics: Dict[str, List[float]], key: str) -> str:
  return percent(metrics[key][-1]) if metrics.get(key) else 'n/a'


def per_class_section(facts: facts_lib.Facts) -> Section:
  per_class = facts.evaluation.get('per_class') or {}
  if not per_class:
    return Section('Per class', 'per-class', [Paragraph('No per-class metrics.')])
  matrix = facts.evaluation.get('confusion_matrix') or []
  support = {name: sum(matrix[i]) for i, name in enumerate(per_class) if i < len(matrix)}
  low = {name for name, _ in facts_lib.low_recall_classes(
      facts.evaluation, facts.config['evaluation']['min_accuracy'])}
  rows = [[name, percent(metrics.get('precision')), percent(metrics.get('recall')),
           str(support.get(name, 'n/a'))] for name, metrics in per_class.items()]
  return Section('Per class', 'per-class', [
      Figure('per_class', plots.per_class_metrics(
          per_class, facts.config['evaluation']['min_accuracy']),
             'Precision and recall per class'),
      Table(['Class', 'Precision', 'Recall', 'Eval images'], rows,
            ['fail' if name in low else '' for name in per_class]),
      Paragraph('Precision and recall are the Evaluator\'s per-class metrics for the '
                'most likely class, the same decision the confusion matrix counts '
                '(n/a: the class was never predicted).'),
  ])


def confusion_section(facts: facts_lib.Facts) -> Section:
  matrix = facts.evaluation.get('confusion_matrix')
  if not matrix or not facts.class_names:
    return Section('Confusion matrix', 'confusion-matrix', [Paragraph('Not available.')])
  confusions = facts_lib.top_confusions(matrix, facts.class_names)
  blocks = [Figure('confusion_matrix', plots.confusion_matrix(matrix, facts.class_names),
                   'Confusion matrix: true class by row, predicted class by column')]
  blocks.append(Bullets([f'{true} taken for {predicted}: {count}'
                         for true, predicted, count in confusions])
                if confusions else Paragraph('No eval image was misclassified.'))
  return Section('Confusion matrix', 'confusion-matrix', blocks)


def trust_section(facts: facts_lib.Facts) -> Optional[Section]:
  """Calibrated confidence and "unknown" (models/trainer/calibration.py,
  ood.py), measured on the eval split, which neither was fitted on."""
  head = (facts.history or {}).get('head') or {}
  fitted, detector = head.get('calibration'), (facts.history or {}).get('ood')
  if not fitted and not detector:
    return None        # a model trained before either existed
  blocks = []
  scored = facts.scoring
  if fitted:
    temperature = fitted['temperature']
    text = (f'Temperature {temperature:.3f}, fitted on the '
            f'{fitted.get("fitted_on", "held-out train predictions")}'
            if 'ece_before' in fitted else fitted.get('reason', ''))
    if fitted.get('note'):
      text += f' ({fitted["note"]})'
    blocks.append(Paragraph(text + '.', lead='Calibration.'))
    if scored is not None and len(scored.label_ids):
      before = calibration.rescale(scored.probabilities, 1.0 / temperature)
      curves = {'before (T = 1)': calibration.reliability(before, scored.label_ids),
                f'after (T = {temperature:.2f})':
                    calibration.reliability(scored.probabilities, scored.label_ids)}
      errors = [calibration.expected_calibration_error(p, scored.label_ids)
                for p in (before, scored.probabilities)]
      blocks += [
          Figure('reliability', plots.reliability(curves),
                 'Reliability on the eval split: accuracy against confidence'),
          Paragraph(f'Expected calibration error on {len(scored.label_ids)} eval images: '
                    f'{errors[0]:.4f} before, {errors[1]:.4f} after '
                    f'({calibration.BINS} confidence bins; 0 is perfectly calibrated).')]
  if detector and detector.get('enabled'):
    text = (f'{detector["method"]}; an image scoring above {detector["threshold"]:.4f} is '
            f'"unknown". The threshold rejects {percent(detector["held_out_rejected"])} '
            f'of the held-out train scores (target {percent(detector["false_rejection_rate"])}).')
    if scored is not None and scored.unknown is not None and len(scored.unknown):
      kept = ~scored.unknown
      right = scored.probabilities.argmax(-1) == scored.label_ids
      text += (f' On the eval split, {int(scored.unknown.sum())} of {len(scored.unknown)} '
               f'images ({percent(scored.unknown.mean())}) were called unknown; accuracy '
               f'on the others {percent(right[kept].mean() if kept.any() else None)}, '
               f'on those {percent(right[~kept].mean() if (~kept).any() else None)}.')
    blocks.append(Paragraph(text, lead='Unknown images.'))
  elif detector:
    blocks.append(Paragraph(detector.get('reason', 'off'), lead='Unknown images: off.'))
  return Section('Confidence and unknown images', 'trust', blocks)


def mistakes_section(facts: facts_lib.Facts) -> Section:
  scored = facts.scoring
  if scored is None:
    return Section('Most confident mistakes', 'mistakes',
                   [Paragraph('The eval split could not be scored (see Missing facts).')])
  blocks = [Paragraph(
      f'The candidate model scored again on {scored.examples} eval images'
      f'{" (the first ones only)" if scored.truncated else ""}: '
      f'{scored.examples - scored.correct} wrong, accuracy {percent(scored.accuracy)}.')]
  if not scored.mistakes:
    return Section('Most confident mistakes', 'mistakes',
                   blocks + [Paragraph('No mistakes to show.')])
  caption = lambda m: f'true: {m.true_label}\npredicted: {m.predicted} ({m.probability:.0%})'
  items = [(m.image, caption(m)) for m in scored.mistakes]
  blocks.append(Figure('mistakes', plots.gallery(items),
                       'The most confidently wrong eval images'))
  overlays = _overlays(scored.mistakes, caption)
  if overlays:
    blocks += [
        Figure('mistakes_gradcam', plots.gallery(overlays),
               'Where the model looked on the most confidently wrong eval images'),
        Paragraph(f'{_GRAD_CAM} of the wrongly predicted class: what in the image '
                  'made the model say it.', lead='Where the model looked.')]
  blocks += [
      Table(['#', 'True class', 'Predicted', 'Probability', 'File'],
            [[str(i), m.true_label, m.predicted, f'{m.probability:.3f}', m.source_path]
             for i, m in enumerate(scored.mistakes, 1)]),
  ]
  return Section(f'The {len(scored.mistakes)} most confident mistakes', 'mistakes', blocks)


def _scored_images(exports: Dict[str, Any]) -> str:
  """'the 80' or '1000 of the 4000' (export.score_images caps the sample;
  records before the cap scored the whole eval split)."""
  scored, split = exports['eval_images'], exports.get('eval_split_images')
  return f'the {scored}' if split in (None, scored) else f'{scored} of the {split}'


def edge_exports_section(facts: facts_lib.Facts) -> Section:
  """The pushed version's TFLite models: size, eval accuracy against the
  SavedModel's, and which quantized ones were left out and why."""
  exports = facts.summary.edge_exports
  if not exports:
    return Section('Edge exports (TFLite)', 'edge-exports', [Paragraph(
        'No version was pushed by this run, or it predates the TFLite exports.')])
  models = exports['models']
  rows = [[name, model['kind'], f'{model["bytes"] / 2**20:.1f} MiB', percent(model['accuracy']),
           f'{-model["drop"] * 100:+.2f}', 'yes' if model['published'] else 'no',
           model['reason'] + (f'; float ops: {", ".join(model["float_ops"])}'
                              if model.get('float_ops') else '')]
          for name, model in models.items()]
  return Section('Edge exports (TFLite)', 'edge-exports', [
      Paragraph(f'Each TFLite model scored on {_scored_images(exports)} eval images, '
                f'decoded and resized to {exports["image_size"]} px as Transform does; the '
                f'SavedModel scores {percent(exports["saved_model_accuracy"])} on the same '
                'pixels. A quantized model is published only within '
                f'{exports["max_quantized_drop"] * 100:.2f} accuracy points of it '
                f'(export.max_quantized_drop); the int8 model was calibrated on '
                f'{exports["representative_images"]} train images at most.'),
      Table(['File', 'Kind', 'Size', 'Eval accuracy', 'Against the SavedModel (points)',
             'Published', 'Why'], rows,
            ['' if model['published'] else 'fail' for model in models.values()]),
  ])


_GRAD_CAM = ("Grad-CAM heatmaps (the model's explain_pixels signature; red: the regions "
             "whose backbone features raised the class's probability most, blue: the least)")


def _overlays(images: List[scoring.ScoredImage], caption) -> List[Tuple[bytes, str]]:
  """(Grad-CAM overlay PNG, caption) of each image that has a heatmap."""
  return [(plots.heatmap_overlay(image_codec.decode_rgb(image.image).numpy(), image.heatmap),
           caption(image)) for image in images if image.heatmap is not None]


def explanations_section(facts: facts_lib.Facts) -> Section:
  """Where the model looked on images it got right: one per class."""
  title, anchor = 'Where the model looked', 'where-the-model-looked'
  samples = facts.scoring.class_samples if facts.scoring else []
  overlays = _overlays(samples, lambda s: f'{s.true_label} ({s.probability:.0%})')
  if not overlays:
    return Section(title, anchor, [Paragraph(
        'No heatmaps: the eval split could not be scored, or its model has no '
        'explain_pixels signature (see Missing facts), or no eval image was right.')])
  return Section(title, anchor, [
      Paragraph(f'{_GRAD_CAM} of the first eval image of each class the model got right '
                f'({scoring.MAX_CLASS_SAMPLES} classes at most, in class id order): a '
                'heatmap on the background rather than the object means the class is '
                'recognised by its context.', lead='One right answer per class.'),
      Figure('class_samples_gradcam', plots.gallery(overlays, caption_color='black'),
             'Where the model looked on one right answer per class'),
      Table(['Class', 'Probability', 'File'],
            [[s.true_label, f'{s.probability:.3f}', s.source_path] for s in samples])])


def components_section(facts: facts_lib.Facts) -> Section:
  components = facts.summary.components
  rows = [[c.node_id, c.state, f'{c.seconds:.1f}'] for c in components]
  rows.append(['all', '', f'{sum(c.seconds for c in components):.1f}'])
  status = ['' if c.state in ('COMPLETE', 'CACHED') else 'fail' for c in components]
  return Section('Components', 'components', [
      Table(['Component', 'State', 'Seconds'], rows, status + ['']),
      Paragraph('CACHED steps reused an earlier run\'s result.'),
  ])


def anomalies_section(facts: facts_lib.Facts) -> Section:
  anomalies = facts.summary.anomalies
  return Section('Data anomalies', 'anomalies', [
      Bullets(anomalies) if anomalies else
      Paragraph('ExampleValidator found no anomalies against the schema.')])


def configuration_section(facts: facts_lib.Facts) -> Section:
  return Section('Configuration', 'configuration', [
      Code(json.dumps(facts.config, indent=2, sort_keys=True, default=str))])


def missing_section(facts: facts_lib.Facts) -> Optional[Section]:
  if not facts.missing:
    return None
  return Section('Missing facts', 'missing', [
      Paragraph('The report left these out:'), Bullets(facts.missing)])


def build(facts: facts_lib.Facts) -> List[Section]:
  """Every section, in reading order (the decision first)."""
  sections = [
      overview(facts), evaluation_section(facts), data_section(facts),
      data_quality_section(facts), training_section(facts), more_labels_section(facts),
      per_class_section(facts), confusion_section(facts), trust_section(facts),
      mistakes_section(facts), explanations_section(facts), edge_exports_section(facts),
      components_section(facts),
      anomalies_section(facts),
      model_card.section(facts), configuration_section(facts), missing_section(facts),
  ]
  return [section for section in sections if section is not None]

