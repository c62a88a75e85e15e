"""The model card section: intended use, data, metrics and limitations, written
from the same facts as the rest of the report (nothing here is typed by hand
per model)."""

from typing import List

from pipeline.report import facts as facts_lib
from pipeline.report.document import Bullets, Paragraph, Section, Table, percent

# Below this many eval images the interval is called out as wide.
_SMALL_EVAL_SET = 200
# Below this many training images in a class, the class is called out.
_FEW_TRAINING_IMAGES = 50


def _names(names: List[str]) -> str:
  return ', '.join(names) if names else 'unknown'


def _split_total(facts: facts_lib.Facts, split: str) -> int:
  return sum(facts.split_counts.get(split, {}).values())


def details(facts: facts_lib.Facts) -> Table:
  config, summary = facts.config, facts.summary
  training = config['training']
  phases = ('logistic regression on the frozen backbone\'s normalised features, '
            'chosen by cross-validation on the train split')
  if training['fine_tune_epochs']:
    phases += (f', then {training["fine_tune_epochs"]} fine-tuning the top '
               f'{training["fine_tune_layers"]} layers')
  return Table(['', ''], [
      ['Model', config['pipeline']['model_name']],
      ['Version', str(summary.pushed_version) if summary.pushed_version is not None
       else 'not published'],
      ['Architecture', f'{config["model"]["backbone"]} backbone (weights: '
                       f'{config["model"]["weights"]}) + feature normalisation + softmax over '
                       f'{len(facts.class_names)} classes'],
      ['Input', f'an encoded image (JPEG, PNG, GIF, BMP), resized to '
                f'{facts.image_size}x{facts.image_size} px'],
      ['Training', phases],
      ['Pipeline run', f'{summary.run_id} ({facts.started})'],
  ])


def limitations(facts: facts_lib.Facts) -> List[str]:
  evaluation, items = facts.evaluation, []
  n = evaluation.get('example_count') or 0
  if facts.accuracy_interval:
    low, high = facts.accuracy_interval
    items.append(
        f'The accuracy was measured on {n} eval images: its 95% interval is '
        f'{low:.1%} to {high:.1%}' + (
            '. That is a small eval set: differences between models of a few '
            'points are not meaningful.' if n < _SMALL_EVAL_SET else '.'))
  bound = facts.config['evaluation']['min_accuracy']
  low_recall = facts_lib.low_recall_classes(evaluation, bound)
  if low_recall:
    items.append('Classes recognized less often than the accuracy bound '
                 f'({bound:.0%}): ' + ', '.join(f'{name} (recall {recall:.0%})'
                                                for name, recall in low_recall) + '.')
  confusions = facts_lib.top_confusions(evaluation.get('confusion_matrix') or [],
                                        facts.class_names)
  if confusions:
    items.append('Most frequent confusions: ' + '; '.join(
        f'{true} taken for {predicted} ({count}x)' for true, predicted, count in confusions)
                 + '.')
  train = facts.split_counts.get('train', {})
  few = [name for name, count in train.items() if count < _FEW_TRAINING_IMAGES]
  if few and len(few) == len(train):
    items.append(f'Every class has fewer than {_FEW_TRAINING_IMAGES} training images '
                 f'(the fewest: {min(train.values())}).')
  elif few:
    items.append(f'Fewer than {_FEW_TRAINING_IMAGES} training images for: '
                 f'{_names(few)}.')
  items.append('The eval images come from the same folder as the training images: '
               'the numbers hold for images like these (same source, framing, '
               'resolution), not for images from elsewhere.')
  items.append('Every input gets one of the known classes: the model has no "none '
               'of these" answer, and its probabilities are not calibrated.')
  if facts.config['model']['weights'] == 'imagenet':
    items.append('The backbone was pretrained on ImageNet and carries its biases.')
  return items


def section(facts: facts_lib.Facts) -> Section:
  summary, evaluation, config = facts.summary, facts.evaluation, facts.config
  classes = facts.intended_classes or facts.class_names
  metrics = ['Eval accuracy: ' + (
      f'{evaluation["accuracy"]:.1%} on {evaluation.get("example_count")} images'
      if evaluation.get('accuracy') is not None else 'not measured') + (
          f' (95% interval {facts.accuracy_interval[0]:.1%} to '
          f'{facts.accuracy_interval[1]:.1%})' if facts.accuracy_interval else '')]
  metrics += [f'{name}: precision {percent(m.get("precision"))}, recall '
              f'{percent(m.get("recall"))}'
              for name, m in (evaluation.get('per_class') or {}).items()]
  metrics.append(f'Quality gate: accuracy >= {config["evaluation"]["min_accuracy"]}, '
                 f'and at most {config["evaluation"]["max_accuracy_drop"]} below the '
                 f'last blessed model; decision: {facts.decision}.')
  split_text = ('the eval/ folder, separate from train/' if facts.fixed_split else
                f'{config["data"]["eval_fraction"]:.0%} of each class held out '
                '(stratified, keyed on the image content hash)')
  version = (f'registry version {summary.pushed_version}'
             if summary.pushed_version is not None
             else f'the candidate model {summary.model_uri or "(unknown)"}')
  return Section('Model card', 'model-card', [
      details(facts),
      Paragraph(f'Classifies an image as one of {len(classes)} classes: '
                f'{_names(classes)} (the label domain of the schema '
                f'{config["data"]["schema_file"]}). It is meant for images like the '
                'training images. It is not for images of other classes, which it '
                'will still put in one of these, nor for decisions about people.',
                lead='Intended use.'),
      Paragraph(f'{_split_total(facts, "train")} images from '
                f'{config["data"]["path"]} (data fingerprint '
                f'{summary.data_fingerprint or "unknown"}); {summary.quarantined} '
                'file(s) quarantined. Per class: ' + ', '.join(
                    f'{name} {count}' for name, count in
                    facts.split_counts.get('train', {}).items()) + '.',
                lead='Training data.'),
      Paragraph(f'{_split_total(facts, "eval")} images: {split_text}.',
                lead='Evaluation data.'),
      Paragraph('', lead='Metrics.'),
      Bullets(metrics),
      Paragraph('', lead='Limitations.'),
      Bullets(limitations(facts)),
      Paragraph('Check predictions on your own images before relying on them; keep a '
                'person in the loop where a wrong class has a cost; the labels are '
                'only as good as the folder they came from; use data you have the '
                'right to use.', lead='Ethical and usage notes.'),
      Paragraph(f'Open an issue in this project\'s tracker with the pipeline run id '
                f'({summary.run_id}), {version}, the image(s) and what the model answered '
                '(`python -m pipeline predict --model <registry folder> <image>`).',
                lead='Reporting issues.'),
  ])
